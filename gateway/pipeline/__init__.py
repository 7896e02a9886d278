"""The request pipeline; its order is written in one place, `gateway.app.Gateway.build_pipeline`."""
