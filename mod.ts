/**
 * vmfactory library API: QEMU VMs from a template or a cache, and the Kata config linter.
 * @module
 */
export { UsageError, VmfactoryError } from "./lib/errors.ts";
