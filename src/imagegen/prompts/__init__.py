"""Prompts: A1111's prompt language (syntax), its encoding into conditioning, and saved styles."""
