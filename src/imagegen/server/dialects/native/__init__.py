"""imagegen's own asynchronous job API: schemas and routes."""
