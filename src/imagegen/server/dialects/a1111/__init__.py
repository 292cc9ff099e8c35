"""The A1111 /sdapi/v1 dialect: schemas, options, translation and routes."""
