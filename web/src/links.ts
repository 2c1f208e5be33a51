// What a meeting link carries. Secrets live in the #fragment, which browsers never send to a
// server: #host=<secret> (host link), #pwd=<passcode>, #invite=<token>.

export interface MeetingLink {
  meetingId: string;
  hostSecret?: string;
  passcode?: string;
  invite?: string;
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
  if (host) link.hostSecret = host;
  if (pwd) link.passcode = pwd;
  if (invite) link.invite = invite;
  return link;
}

/** The link to share with guests: the page's address without any secret. */
export function shareableLink(link: MeetingLink, origin: string): string {
  const url = `${origin}/m/${link.meetingId}`;
  return link.passcode ? `${url}#pwd=${encodeURIComponent(link.passcode)}` : url;
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
