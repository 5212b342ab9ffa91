-- One binary-mode CloudEvent POST, the same for every server under test.
wrk.method = "POST"
wrk.body = '{"n":1,"text":"hello knflow"}'
wrk.headers["content-type"] = "application/json"
wrk.headers["ce-specversion"] = "1.0"
wrk.headers["ce-id"] = "bench-1"
wrk.headers["ce-source"] = "/bench/wrk"
wrk.headers["ce-type"] = "dev.knflow.bench.ping"
wrk.headers["ce-runid"] = "run-bench"
