/**
 * Makes a VM its own: host clock, fresh RNG seed, hostname and (for clones, which share the
 * template's) a new boot_id. The calls go out together; the agent answers each by id.
 * @module
 */
import type { AgentClient } from "../guest/agent_client.ts";

/** What to set in the guest. */
export interface Identity {
  /** Hostname to set. */
  hostname: string;
  /** Give the guest a new boot_id (clones start with the template's). */
  newBootId: boolean;
}

/**
 * Sets the guest clock to the host's, seeds the guest RNG with 64 bytes of host entropy, sets the
 * hostname and optionally a new boot_id. May be called once the agent answers.
 */
export async function personalize(agent: AgentClient, identity: Identity): Promise<void> {
  const seed = crypto.getRandomValues(new Uint8Array(64));
  await Promise.all([
    agent.setClock(new Date()),
    agent.seedRng(seed),
    agent.setHostname(identity.hostname),
    identity.newBootId ? agent.setBootId(crypto.randomUUID()) : Promise.resolve(),
  ]);
}
