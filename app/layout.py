"""Darwin Studio layout: builds the components and wires their events to the callbacks."""

import os

import gradio as gr
import pandas as pd

from darwin_core.choices import CROSSBREED_MODES, MERGE_METHODS, PRESET_NAMES
from darwin_core.evaluate import list_suites
from darwin_core.genome import GENE_GROUPS, GENE_HELP, GENE_NAMES, Genome

from . import callbacks, evolve_callbacks, tables
from .state import close_request, close_session

DEFAULT_FATHER = "embedded:tiny-arith"
DEFAULT_MOTHER = "embedded:tiny-reverse"
DEFAULT_SUITES = ["tiny"]
# A session's state (loaded models, bred children) is deleted this long after its last use,
# or when the browser tab closes, whichever comes first.
SESSION_TTL_SECONDS = int(os.environ.get("DARWIN_SESSION_TTL", 2 * 3600))

CSS = """
.gene-group {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px;}
#breed-status {min-height: 2em;}
@media (max-width: 640px) { .gradio-container {padding: 4px !important;} }
"""

INTRO = """# Darwin Studio
Breed a child model from two parents **without training**: scan both parents (MRI), set or evolve a
14-gene genome, breed, evaluate the child against its parents, and publish it with its whole recipe.
The embedded *tiny* family works offline: `tiny-arith` adds two-digit numbers (prompt `12+34=`),
`tiny-reverse` reverses short words (prompt `rev:hello=`), and a good child does both."""


def build_demo() -> gr.Blocks:
    genome = Genome()
    with gr.Blocks(title="Darwin Studio") as demo:
        session = gr.State(None, delete_callback=close_session, time_to_live=SESSION_TTL_SECONDS)
        gr.Markdown(INTRO)

        with gr.Tabs() as tabs:
            # --- Parents ---------------------------------------------------------------------
            with gr.Tab("1 · Parents", id="parents"):
                choices = callbacks.parent_choices()
                with gr.Row():
                    father = gr.Dropdown(choices, value=DEFAULT_FATHER, label="Father (parent A)", allow_custom_value=True,
                                         info="embedded:NAME, a local folder or .gguf path, or a Hub id", elem_id="father")
                    mother = gr.Dropdown(choices, value=DEFAULT_MOTHER, label="Mother (parent B)", allow_custom_value=True, elem_id="mother")
                    base = gr.Dropdown([""] + choices, value="", label="Base (optional common ancestor)", allow_custom_value=True, elem_id="base")
                with gr.Accordion("Upload a model folder as a .zip", open=False):
                    with gr.Row():
                        upload = gr.File(label="Model folder (.zip)", file_types=[".zip"], type="filepath", elem_id="upload-zip")
                        upload_role = gr.Radio(["father", "mother"], value="mother", label="Use it as")
                with gr.Accordion("Crossing families (Architecture Mapper)", open=False):
                    with gr.Row():
                        crossbreed = gr.Radio(["none", *CROSSBREED_MODES], value="none", label="Crossbreed mode",
                                              info="ffn: keep the father's attention and mixers, blend only the FFNs per layer")
                        min_match = gr.Slider(0, 1, value=0.8, step=0.05, label="Minimum share of tensors that must pair",
                                              info="breeding stops with the match report below this")
                check_button = gr.Button("Check compatibility", variant="primary", elem_id="check-parents")
                compat_table = gr.Dataframe(label="Compatibility report", interactive=False, elem_id="compat-table")
                compat_summary = gr.Markdown(elem_id="compat-summary")
                match_table = gr.Dataframe(label="Architecture Mapper: tensors per component", interactive=False,
                                           visible=False, elem_id="match-table")
                with gr.Accordion("Find parents on the Hugging Face Hub", open=False):
                    with gr.Row():
                        hub_query = gr.Textbox(label="Search", placeholder="e.g. SmolLM2 instruct", scale=3)
                        hub_same_type = gr.Checkbox(label="same model type as the father", value=True)
                        hub_sort = gr.Radio(["downloads", "likes"], value="downloads", label="sort by")
                        hub_button = gr.Button("Search", scale=1)
                        siblings_button = gr.Button("Siblings of the father", scale=1)
                    hub_results = gr.Dataframe(label="Results (select a row to use it as the mother)", interactive=False)
                    hub_note = gr.Markdown()

            # --- MRI -------------------------------------------------------------------------
            with gr.Tab("2 · MRI", id="mri"):
                gr.Markdown("Per-layer diagnostics of both parents. Static scores need no data; probe influence "
                            "runs five probe families through each parent. Raise a family's weight to favour the "
                            "parent that relies more on its layers for it.")
                with gr.Row():
                    family_sliders = [
                        gr.Slider(0, 3, value=1.0, step=0.1, label=f"{family} weight", elem_id=f"family-{family}")
                        for family in callbacks.PROBE_FAMILY_NAMES
                    ]
                scan_button = gr.Button("Scan parents", variant="primary", elem_id="scan")
                with gr.Row():
                    static_a = gr.Plot(label="Father static", elem_id="static-a")
                    static_b = gr.Plot(label="Mother static", elem_id="static-b")
                with gr.Row():
                    probe_a = gr.Plot(label="Father probes", elem_id="probe-a")
                    probe_b = gr.Plot(label="Mother probes", elem_id="probe-b")
                with gr.Row():
                    ratio_map = gr.Plot(label="r_MRI", elem_id="ratio-map")
                    transplant_map = gr.Plot(label="Transplants at the current trust", elem_id="transplant-map")
                sibling_plot = gr.Plot(label="Sibling differences", elem_id="sibling-plot")

            # --- Genome ----------------------------------------------------------------------
            with gr.Tab("3 · Genome", id="genome"):
                with gr.Row():
                    preset = gr.Dropdown(list(PRESET_NAMES), value="balanced", label="Preset", scale=2)
                    apply_preset_button = gr.Button("Apply preset", scale=1)
                    genome_upload = gr.File(label="Import genome JSON", file_types=[".json"], type="filepath", scale=2)
                    with gr.Column(scale=1, min_width=240):
                        export_button = gr.Button("Export genome JSON", elem_id="export-button")
                        export_file = gr.File(label="genome.json", interactive=False, visible=False, elem_id="export-file")
                gene_sliders = {}
                with gr.Row():
                    for group, genes in GENE_GROUPS.items():
                        with gr.Column(min_width=220, elem_classes="gene-group"):
                            gr.Markdown(f"**{group}**")
                            for gene in genes:
                                gene_sliders[gene] = gr.Slider(0, 1, value=getattr(genome, gene), step=0.01, label=gene,
                                                               info=GENE_HELP[gene], elem_id=f"gene-{gene}")
                plan_note = gr.Markdown()
                with gr.Row():
                    plan_plot = gr.Plot(label="Per-tensor plan", elem_id="plan-plot")
                    plan_counts = gr.Dataframe(label="Transplant and blend counts", interactive=False, elem_id="plan-counts")

            # --- Breed and evaluate ----------------------------------------------------------
            with gr.Tab("4 · Breed & evaluate", id="breed"):
                with gr.Row():
                    suites = gr.CheckboxGroup(list_suites(), value=[s for s in DEFAULT_SUITES if s in list_suites()],
                                              label="Quick-eval suites (test split)", elem_id="suites")
                    seed = gr.Number(0, label="Seed", precision=0)
                    method = gr.Dropdown(list(MERGE_METHODS), value="darwin", label="Method (darwin, or a fixed recipe)")
                    ratio = gr.Slider(0, 1, value=0.5, step=0.01, label="Fixed-recipe ratio")
                    density = gr.Slider(0, 1, value=1.0, step=0.01, label="Fixed-recipe density")
                with gr.Row():
                    breed_button = gr.Button("Breed child", variant="primary", elem_id="breed-button")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
                breed_status = gr.Markdown(elem_id="breed-status")
                eval_table = gr.Dataframe(tables.eval_table(None), label="Quick eval: child vs parents", interactive=False,
                                          elem_id="eval-table")
                eval_note = gr.Markdown(elem_id="eval-note")
                health_verdict = gr.Markdown(elem_id="health-verdict")
                health_plot = gr.Plot(label="Health check per layer", elem_id="health-plot")
                gr.Markdown("### Chat with all three")
                with gr.Row():
                    chat_prompt = gr.Textbox(label="Prompt", placeholder="e.g. 12+34= (addition) or rev:hello= (reverse a word)", scale=4, elem_id="chat-prompt")
                    chat_button = gr.Button("Send to father, mother and child", scale=1, elem_id="chat-send")
                with gr.Row():
                    answer_father = gr.Textbox(label="Father", interactive=False, elem_id="answer-father")
                    answer_mother = gr.Textbox(label="Mother", interactive=False, elem_id="answer-mother")
                    answer_child = gr.Textbox(label="Child", interactive=False, elem_id="answer-child")

            # --- Evolve ----------------------------------------------------------------------
            with gr.Tab("5 · Evolve", id="evolve"):
                gr.Markdown("CMA-ES searches the genome, trust gene included, scoring each in-memory child on the "
                            "suites' **search** split. The best child is then bred and scored on the **test** split, "
                            "which the search never saw. The start genome is the current sliders.")
                with gr.Row():
                    population = gr.Number(8, label="Population", precision=0, minimum=4, elem_id="evolve-population")
                    generations = gr.Number(10, label="Generations", precision=0, minimum=1, elem_id="evolve-generations")
                    sigma = gr.Slider(0.01, 1.0, value=0.2, step=0.01, label="Initial sigma")
                    evolve_seed = gr.Number(0, label="Seed", precision=0)
                    space = gr.Radio(["genome", "layers"], value="genome", label="Genome space",
                                     info="layers: one attention and one FFN ratio per layer, plus trust")
                with gr.Row():
                    frozen = gr.CheckboxGroup(list(GENE_NAMES), label="Frozen genes (kept at the start value)")
                with gr.Row():
                    evolve_suites = gr.CheckboxGroup(list_suites(), value=[s for s in DEFAULT_SUITES if s in list_suites()],
                                                     label="Fitness suites", elem_id="evolve-suites")
                    time_budget = gr.Number(0, label="Time budget (s, 0 = none)", minimum=0)
                    candidate_budget = gr.Number(0, label="Candidate budget (0 = none)", precision=0, minimum=0,
                                                 elem_id="evolve-candidate-budget")
                    backend = gr.Radio(["local", "ray"], value="local", label="Backend")
                with gr.Row():
                    evolve_button = gr.Button("Evolve", variant="primary", elem_id="evolve-button")
                    resume_button = gr.Button("Resume last run", elem_id="resume-button")
                    evolve_cancel = gr.Button("Cancel", variant="stop", elem_id="evolve-cancel")
                    ablation_button = gr.Button("Trust ablation (3 runs)", elem_id="ablation-button")
                evolve_cancel_note = gr.Markdown(elem_id="evolve-cancel-note")
                evolve_status = gr.Markdown(elem_id="evolve-status")
                with gr.Row():
                    fitness_plot = gr.Plot(label="Fitness per generation", elem_id="fitness-plot")
                    best_genome = gr.Dataframe(pd.DataFrame(columns=["gene", "value"]), label="Best genome so far", interactive=False,
                                               elem_id="best-genome")
                ablation_table = gr.Dataframe(tables.ablation_table([]),
                                              label="Trust ablation (test split)", interactive=False, elem_id="ablation-table")

            # --- Save and publish ------------------------------------------------------------
            with gr.Tab("6 · Save & publish", id="save"):
                with gr.Row():
                    save_path = gr.Textbox(label="Save the child to folder", placeholder="/path/to/my-child", scale=3, elem_id="save-path")
                    save_button = gr.Button("Save", scale=1, elem_id="save-button")
                    zip_button = gr.Button("Prepare zip", scale=1, elem_id="zip-button")
                    zip_file = gr.File(label="Download", interactive=False, elem_id="zip-file", scale=2, min_width=240)
                save_status = gr.Markdown(elem_id="save-status")
                with gr.Accordion("Push to the Hugging Face Hub", open=False):
                    with gr.Row():
                        repo_id = gr.Textbox(label="Repository", placeholder="your-name/darwin-child", elem_id="repo-id")
                        private = gr.Checkbox(label="private", value=True)
                        token = gr.Textbox(label="Token (or set HF_TOKEN on the server)", type="password", elem_id="hf-token")
                    with gr.Row():
                        token_button = gr.Button("Check token")
                        push_button = gr.Button("Push", variant="primary")
                    push_status = gr.Markdown()
                gr.Markdown("### Model card preview")
                card_preview = gr.Markdown(elem_id="card-preview")

            # --- Family tree -----------------------------------------------------------------
            with gr.Tab("7 · Family tree", id="tree"):
                tree_button = gr.Button("Draw the family tree", elem_id="tree-button")
                tree_plot = gr.Plot(label="Lineage", elem_id="tree-plot")
                next_generation = gr.Button("Use this child as the father of the next generation", elem_id="next-generation")

        # --- events --------------------------------------------------------------------------
        parents_in = [father, mother, base, crossbreed, min_match, session]
        parents_out = [session, compat_table, compat_summary, match_table]
        genes = [gene_sliders[name] for name in gene_sliders]
        weights_and_genes = [*family_sliders, *genes]
        mri_out = [session, static_a, static_b, probe_a, probe_b, ratio_map, transplant_map, sibling_plot]
        plan_out = [session, plan_plot, plan_counts, plan_note]

        def check_then_scan(event):
            # Scan and plan only when the parents resolved; an error stops the chain.
            return (
                event.success(callbacks.scan_after_check, [session, *weights_and_genes], mri_out, concurrency_id="heavy")
                .success(callbacks.update_plan, [session, *weights_and_genes], plan_out)
            )

        # "Use this child as the father" checks the new pair at once, like the button and page load.
        next_parent = next_generation.click(callbacks.child_as_parent, [session], [session, father, tabs])
        for check in (check_button.click(callbacks.check_parents, parents_in, parents_out, api_name="check_parents"),
                      demo.load(callbacks.check_parents, parents_in, parents_out, api_name=False),
                      next_parent.success(callbacks.check_parents, parents_in, parents_out)):
            check_then_scan(check)
            check.failure(callbacks.parents_not_checked, None, [compat_table, compat_summary, match_table])
        for field in (father, mother, base, crossbreed, min_match):
            field.change(callbacks.parents_edited, [session, father, mother, base, crossbreed, min_match], parents_out,
                         show_progress="hidden", trigger_mode="always_last")
        scan_button.click(callbacks.scan_parents, [session, *weights_and_genes], mri_out, concurrency_id="heavy")

        for slider in [*family_sliders, *genes]:
            # "always_last" drops intermediate values while a slider is dragged, so the plan keeps up.
            slider.change(callbacks.update_plan, [session, *weights_and_genes], plan_out, show_progress="hidden",
                          trigger_mode="always_last").then(
                callbacks.reweight, [session, *weights_and_genes], [session, ratio_map, transplant_map], show_progress="hidden"
            )

        apply_preset_button.click(callbacks.apply_preset, [preset], genes).then(
            callbacks.update_plan, [session, *weights_and_genes], plan_out
        )
        genome_upload.upload(callbacks.import_genome, [genome_upload], genes).then(
            callbacks.update_plan, [session, *weights_and_genes], plan_out
        )
        export_button.click(callbacks.export_genome, [session, *genes], [session, export_file])

        breed_event = breed_button.click(
            callbacks.breed_child,
            [session, suites, seed, method, ratio, density, *weights_and_genes],
            [session, breed_status, eval_table, eval_note, health_verdict, health_plot, card_preview],
            concurrency_id="heavy",
            api_name="breed",
        )
        cancel_button.click(callbacks.cancel_breed, [session], [breed_status], cancels=[breed_event])
        chat_button.click(callbacks.chat_all, [session, chat_prompt], [session, answer_father, answer_mother, answer_child], concurrency_id="heavy")
        chat_prompt.submit(callbacks.chat_all, [session, chat_prompt], [session, answer_father, answer_mother, answer_child], concurrency_id="heavy")

        save_button.click(callbacks.save_child, [session, save_path], [session, save_status], api_name="save_child")
        zip_button.click(callbacks.zip_child, [session], [session, zip_file])
        token_button.click(callbacks.token_status, [token, repo_id], [push_status], api_name="token_status")
        push_button.click(callbacks.push_child, [session, repo_id, private, token], [session, push_status], concurrency_id="heavy")

        tree_button.click(callbacks.family_tree, [session], [session, tree_plot])

        upload.upload(callbacks.upload_parent, [session, upload, upload_role], [session, father, mother])
        hub_button.click(callbacks.hub_search, [hub_query, hub_same_type, hub_sort, father], [hub_results, hub_note])
        hub_results.select(callbacks.hub_pick, [hub_results], [mother])
        siblings_button.click(callbacks.hub_siblings, [father], [hub_results, hub_note, base])

        evolve_inputs = [session, population, generations, sigma, evolve_seed, space, frozen, evolve_suites, time_budget,
                         candidate_budget, backend]
        evolve_outputs = [session, evolve_status, evolve_cancel_note, fitness_plot, best_genome, *genes,
                          breed_status, eval_table, eval_note, health_verdict, health_plot, card_preview]
        resume_flag_off, resume_flag_on = gr.State(False), gr.State(True)
        evolve_button.click(evolve_callbacks.run_evolution, [*evolve_inputs, resume_flag_off, *weights_and_genes],
                                           evolve_outputs, concurrency_id="heavy")
        resume_button.click(evolve_callbacks.run_evolution, [*evolve_inputs, resume_flag_on, *weights_and_genes],
                                           evolve_outputs, concurrency_id="heavy")
        evolve_cancel.click(evolve_callbacks.cancel_evolution, [session], [evolve_cancel_note])
        ablation_button.click(evolve_callbacks.run_ablation,
                              [session, population, generations, sigma, evolve_seed, evolve_suites, *weights_and_genes],
                              [session, ablation_table], concurrency_id="heavy")
        demo.unload(close_request)

        demo.components = {
            "session": session, "father": father, "mother": mother, "base": base, "genes": gene_sliders,
            "family_sliders": family_sliders, "suites": suites, "tabs": tabs,
        }
    return demo
