"""The HTTP API of the contract (../shared/contract/API.md), on FastAPI."""
