// The link secrets' one-way derivations, on the main thread: the same Rust (`web-session`'s
// `links`, over `e2ee::link_secrets`) as the native client, through the same wasm module as the
// E2EE worker. Nothing here is cryptography written in TypeScript.

import init, { helloFields, issueInvitation, meetingKeyOf, newHostLink, newInvitationSecret } from './wasm/web_session.js';
import type { MeetingLink } from './links';

let ready: Promise<unknown> | null = null;

/** Loads the wasm once (the first call fetches and compiles it). */
function loaded(): Promise<unknown> {
  ready ??= init();
  return ready;
}

/** A new meeting's host link, made here: the server gets only `host_secret_sha256`. */
export interface NewHostLink {
  seed: string;
  /** What the server checks for hosts (`hello`, the API's bearer token). */
  host_secret: string;
  host_secret_sha256: string;
  meeting_key: string;
}

export async function makeHostLink(): Promise<NewHostLink> {
  await loaded();
  return JSON.parse(newHostLink()) as NewHostLink;
}

/** What a link gives this page once its secrets are checked and derived. */
export interface LinkKeys {
  /** `hello`'s `host_secret` (derived from `#host=`) and `invite` (derived from `#invite=`). */
  hello: { host_secret?: string; invite?: string };
  /** The meeting key guests' links carry: the link's `#k=`, or the host link's own. */
  meetingKey: string | null;
}

/** Derives what the server may see from a link's secrets; throws when the link is damaged. */
export async function linkKeys(link: MeetingLink): Promise<LinkKeys> {
  await loaded();
  const fields = JSON.parse(helloFields(link.hostSeed ?? '', link.invite ?? '')) as { host_secret?: string | null; invite?: string | null };
  const hello: LinkKeys['hello'] = {};
  if (fields.host_secret) hello.host_secret = fields.host_secret;
  if (fields.invite) hello.invite = fields.invite;
  const meetingKey = link.meetingKey ?? (link.hostSeed ? meetingKeyOf(link.hostSeed) : null);
  return { hello, meetingKey };
}

/** A new invitation's secret: `secret` stays here, `token_sha256` goes to the server. */
export async function makeInvitationSecret(): Promise<{ secret: string; token_sha256: string }> {
  await loaded();
  return JSON.parse(newInvitationSecret()) as { secret: string; token_sha256: string };
}

/** The `#invite=` value, signed with the host link's meeting key, once the server numbered it. */
export async function signInvitation(hostSeed: string, secret: string, id: string, expiresAt: number, skipLobby: boolean): Promise<string> {
  await loaded();
  return issueInvitation(hostSeed, secret, id, expiresAt, skipLobby);
}
