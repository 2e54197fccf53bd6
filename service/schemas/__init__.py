"""Request and response bodies, one pydantic model per direction, one module per router.

common.py holds what every router shares (the error body, field types, body parsing); the
OpenAPI examples sit in each model's ``model_config``, beside the fields they illustrate.
"""
