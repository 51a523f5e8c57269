/**
 * Makes a VM its own: fresh RNG seed (and a reseed of the guest's CRNG), host clock, hostname
 * and (for clones, which share the template's) a new boot_id, in one agent round trip that the
 * guest answers only once each step is done.
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
 * Seeds the guest RNG with 64 bytes of host entropy and reseeds its CRNG, sets the guest clock
 * to the host's, sets the hostname and optionally a new boot_id. May be called once the agent
 * answers. Fails with an AgentError unless the guest confirmed all of it (the reseed included),
 * so a VM whose RNG may still be the template's is never handed out.
 */
export async function personalize(agent: AgentClient, identity: Identity): Promise<void> {
  await agent.personalizeGuest({
    seed: crypto.getRandomValues(new Uint8Array(64)),
    time: new Date(),
    hostname: identity.hostname,
    ...(identity.newBootId ? { bootId: crypto.randomUUID() } : {}),
  });
}
