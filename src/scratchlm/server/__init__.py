"""`scratchlm serve`: an OpenAI-compatible HTTP server with continuous batching.

- `scheduler.Scheduler`: one thread owns the model's `BatchDecoder`; requests join and leave the
  running batch between decode steps.
- `app.create_app`: the FastAPI routes (`/v1/completions`, `/v1/chat/completions`, `/v1/models`,
  `/health`, `/metrics`, the browser page at `/`).
- `cli`: the `serve` command's flags and entry point.
"""
