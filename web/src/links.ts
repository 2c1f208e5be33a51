// What a meeting link carries. Secrets live in the #fragment, which browsers never send to a
// server:
// - host link: `#host=<seed>` (32 bytes, base64url). The server gets only values derived from
//   it one-way (the host secret in `hello` and as the API's bearer token).
// - join link: `#k=<meeting public key>` (and `&pwd=<passcode>`): the only group this page
//   enters is the one the meeting key signed.
// - invitation link: `#invite=<id>.<seed>.<expiry>.<0|1>.<certificate>&k=<meeting key>`,
//   made by a host's client; the server gets only the token derived from it.

export interface MeetingLink {
  meetingId: string;
  /** `#host=`: the host link's seed (never sent anywhere). */
  hostSeed?: string;
  passcode?: string;
  /** `#invite=`: the invitation as the host's client issued it (never sent as is). */
  invite?: string;
  /** `#k=`: the meeting's public key. */
  meetingKey?: string;
}

const MEETING_PATH = /^\/m\/([a-z2-7]{26})\/?$/i;

export function parseMeetingLink(location: Location): MeetingLink | null {
  const match = MEETING_PATH.exec(location.pathname);
  if (!match?.[1]) return null;
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ''));
  const link: MeetingLink = { meetingId: match[1].toLowerCase() };
  const host = fragment.get('host');
  const pwd = fragment.get('pwd');
  const invite = fragment.get('invite');
  const key = fragment.get('k');
  if (host) link.hostSeed = host;
  if (pwd) link.passcode = pwd;
  if (invite) link.invite = invite;
  if (key) link.meetingKey = key;
  return link;
}

/** Percent-encodes all but RFC 3986 unreserved characters, for a value in a #fragment. */
export function fragmentValue(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * The link to share with guests: the meeting's address with its meeting key (`#k=`) and
 * passcode, never a host link's or an invitation's secret. `meetingKey` is the link's own
 * `#k=` or, for a host link, its seed's meeting key (see `meetingKeyOf`).
 */
export function shareableLink(link: MeetingLink, origin: string, meetingKey: string): string {
  const url = `${origin}/m/${link.meetingId}`;
  const parts = [`k=${fragmentValue(meetingKey)}`];
  if (link.passcode) parts.unshift(`pwd=${fragmentValue(link.passcode)}`);
  return `${url}#${parts.join('&')}`;
}

/** Adds the meeting key to a join link the server answered (which may carry `#pwd=`). */
export function withMeetingKey(joinUrl: string, meetingKey: string): string {
  const k = `k=${fragmentValue(meetingKey)}`;
  const hash = joinUrl.indexOf('#');
  if (hash < 0) return `${joinUrl}#${k}`;
  return hash === joinUrl.length - 1 ? `${joinUrl}${k}` : `${joinUrl}&${k}`;
}

/** A random id kept in this browser, so that a ban holds for the device too. */
export function deviceId(): string {
  const key = 'conclave.device_id';
  try {
    const existing = localStorage.getItem(key);
    if (existing) return existing;
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    const id = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    localStorage.setItem(key, id);
    return id;
  } catch {
    return 'no-storage';
  }
}

/** Test-only switches, read from the query string (each shows a red banner). */
export interface TestSwitches {
  /** Receivers get no decrypting transform (sending stays encrypted). */
  passthroughReceive: boolean;
  /** Pretend the browser has only this encoded-frame API: `encoded-streams` or `none`. */
  forceApi: 'encoded-streams' | 'none' | null;
}

export function testSwitches(location: Location): TestSwitches {
  const query = new URLSearchParams(location.search);
  const api = query.get('e2ee_test_force_api');
  return {
    passthroughReceive: query.get('e2ee_test_passthrough_receive') === '1',
    forceApi: api === 'encoded-streams' || api === 'none' ? api : null,
  };
}
