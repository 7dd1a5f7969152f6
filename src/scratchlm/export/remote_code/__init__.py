"""The configuration and modeling files of the custom Hugging Face export (`export hf --layout
custom`). scratchlm never imports them: `export.custom` copies them beside the weights, where
transformers loads them with `trust_remote_code=True`. They import only torch and transformers, so
that a user needs neither scratchlm nor this package to run an export."""
