import assert from "node:assert/strict";
import { promtoolComplaints } from "./_promtool.ts";
import { DaemonMetrics } from "./daemon_metrics.ts";

function sample() {
  let pool:
    | { ready: number; target: number; min: number; max: number; making: number }
    | undefined = { ready: 2, target: 3, min: 1, max: 8, making: 1 };
  const metrics = new DaemonMetrics({
    folders: () => ({ owned: 4, pooled: 2, building: 1 }),
    pool: () => pool,
    template: () => ({ ready: true, stale: false, ageSeconds: 42.5 }),
  }, { version: "0.1.0", factory: "template" });
  return { metrics, setPool: (p: typeof pool) => pool = p };
}

Deno.test("the exposition passes promtool check metrics and carries every family", async () => {
  const { metrics } = sample();
  metrics.observeRequest({ route: "POST /v1/vms", status: 201, seconds: 0.012 });
  metrics.observeRequest({ route: "POST /v1/vms", status: 503, seconds: 0.001 });
  metrics.observeRequest({ route: "GET /healthz", status: 200, seconds: 0.0004 });
  metrics.observeCreate("pool", 0.011);
  metrics.observeCreate("direct", 4.5);
  metrics.observeRefill(0.31, true);
  metrics.observeRefill(0.2, false);
  metrics.observeBuild(6.2, true);
  metrics.bootFailed("request");
  const text = await metrics.render();
  assert.equal(await promtoolComplaints(text), "");
  assert.match(metrics.contentType, /^text\/plain; version=0\.0\.4/);
  const lines = text.split("\n");
  const has = (line: string) => assert.ok(lines.includes(line), `no ${line} in:\n${text}`);
  has('vmfactory_info{version="0.1.0",factory="template"} 1');
  has('vmfactory_vms{state="owned"} 4');
  has('vmfactory_vms{state="cached"} 0');
  has("vmfactory_pool_ready 2");
  has("vmfactory_pool_target 3");
  has("vmfactory_pool_refills_in_progress 1");
  has('vmfactory_http_requests_total{route="POST /v1/vms",status="201"} 1');
  has('vmfactory_http_request_duration_seconds_count{route="POST /v1/vms"} 2');
  has('vmfactory_vm_create_duration_seconds_bucket{le="0.025",source="pool"} 1');
  has('vmfactory_vm_create_duration_seconds_count{source="direct"} 1');
  has('vmfactory_pool_refills_total{outcome="ok"} 1');
  has('vmfactory_pool_refills_total{outcome="failed"} 1');
  has('vmfactory_boot_failures_total{path="pool"} 1');
  has('vmfactory_boot_failures_total{path="request"} 1');
  has('vmfactory_template_builds_total{outcome="ok"} 1');
  has("vmfactory_template_age_seconds 42.5");
  has("vmfactory_template_stale 0");
  has("vmfactory_template_ready 1");
});

Deno.test("gauges are read at each scrape; route labels stay bounded", async () => {
  const { metrics, setPool } = sample();
  setPool(undefined);
  assert.match(await metrics.render(), /^vmfactory_pool_ready 0$/m);
  setPool({ ready: 5, target: 5, min: 5, max: 5, making: 0 });
  assert.match(await metrics.render(), /^vmfactory_pool_ready 5$/m);
  for (let i = 0; i < 100; i++) {
    metrics.observeRequest({ route: `GET /odd/${i}`, status: 404, seconds: 0.001 });
  }
  const text = await metrics.render();
  const routes = new Set([...text.matchAll(/route="([^"]+)"/g)].map((m) => m[1]));
  assert.equal(routes.size, 65, "64 routes and other");
  assert.ok(routes.has("other"));
  assert.equal(await promtoolComplaints(text), "");
});
