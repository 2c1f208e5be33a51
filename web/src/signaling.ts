// The signaling client: one WebSocket to /ws speaking the JSON protocol of crates/proto.
// It knows nothing of media or keys; the meeting controller decides what a closed socket means.

import { PROTOCOL_VERSION, type ClientMessage, type ServerMessage } from './protocol';

const PING_EVERY_MS = 10_000;

export interface SignalingHandlers {
  open(): void;
  /** Every server message, parsed, with its JSON text as received (the E2EE worker wants it). */
  message(msg: ServerMessage, json: string): void;
  closed(code: number, reason: string): void;
}

export class SignalingClient {
  private socket: WebSocket | null = null;
  private ping: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly handlers: SignalingHandlers) {}

  connect(): void {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(`${scheme}//${location.host}/ws`);
    this.socket = socket;
    socket.onopen = () => {
      this.ping = setInterval(() => this.send({ type: 'ping' }), PING_EVERY_MS);
      this.handlers.open();
    };
    socket.onmessage = (event: MessageEvent) => {
      if (typeof event.data !== 'string') return;
      let msg: ServerMessage;
      try {
        msg = JSON.parse(event.data) as ServerMessage;
      } catch {
        console.warn('unreadable server message');
        return;
      }
      this.handlers.message(msg, event.data);
    };
    socket.onclose = (event) => {
      this.stopPing();
      if (this.socket === socket) {
        this.socket = null;
        this.handlers.closed(event.code, event.reason);
      }
    };
  }

  get connected(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  send(msg: ClientMessage): void {
    this.sendJson(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }));
  }

  /** Sends a message already encoded (by the E2EE worker, through `proto::encode`). */
  sendJson(json: string): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(json);
  }

  /** Closes without telling the handlers (the controller already knows why). */
  close(): void {
    this.stopPing();
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, 'bye');
  }

  private stopPing(): void {
    if (this.ping !== null) clearInterval(this.ping);
    this.ping = null;
  }
}
