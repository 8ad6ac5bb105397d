"""Darwin Studio entry point: `python app.py` locally, and the `app_file` of a Hugging Face Space."""

from app.main import launch

if __name__ == "__main__":
    launch()
