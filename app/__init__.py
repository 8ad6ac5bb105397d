"""The Darwin Studio Gradio app: a thin layer of callbacks over `darwin_core`."""
