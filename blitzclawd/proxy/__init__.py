"""The metering token proxy: what OpenClaw instances call instead of Anthropic and OpenAI."""
