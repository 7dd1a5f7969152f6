"""`scratchlm serve`: an OpenAI-compatible HTTP server with continuous batching.

- `scheduler.Scheduler`: one thread owns the model's `BatchDecoder`; requests join and leave the
  running batch between decode steps.
- `app.create_app`: the FastAPI routes (`/v1/completions`, `/v1/chat/completions`, `/v1/models`,
  `/health`, `/metrics`, the browser page at `/`).
- `openai`: the OpenAI wire format as plain functions: requests checked and prepared, responses,
  stream chunks and usage built.
- The `serve` command's flags and start-up are in `cli/serve.py`.
"""
