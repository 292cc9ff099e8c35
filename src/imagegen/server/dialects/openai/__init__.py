"""The OpenAI /v1/images dialect: schemas and routes."""
