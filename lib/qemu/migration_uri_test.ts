import assert from "node:assert/strict";
import { loadFromFileUri, saveToFileUri } from "./migration_uri.ts";

Deno.test("migration URIs quote the path for the shell", () => {
  assert.equal(saveToFileUri("/run/t/state"), "exec:cat > '/run/t/state'");
  assert.equal(loadFromFileUri("/a b/it's"), `exec:cat '/a b/it'\\''s'`);
});
