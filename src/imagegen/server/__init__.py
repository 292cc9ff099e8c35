"""The HTTP service: imagegen's async job API, the A1111 ``/sdapi/v1`` and OpenAI ``/v1/images`` dialects.

The API process validates, enqueues and answers; generation runs in worker processes that own the engine
(:mod:`imagegen.server.worker`). Jobs live in an SQLite store in the data directory (:mod:`imagegen.server.store`).
"""
