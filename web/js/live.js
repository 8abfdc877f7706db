// The live connection of every page: one WebSocket (stockpulse.v1.json) that subscribes to
// the page's topics, hands every message over in order, notices gaps, and reconnects by
// itself with growing pauses, resuming each topic from the last sequence number it saw
// (the server answers with what was missed, or a fresh snapshot).

import { token } from "./format.js";

const PAUSE_MIN_MS = 500;
const PAUSE_MAX_MS = 10000;
const PING_MS = 20000;

export class Live {
  /**
   * @param {string[]} topics
   * @param {(message: object) => void} onMessage
   * @param {(state: "connecting" | "live" | "reconnecting") => void} onState
   */
  constructor(topics, onMessage, onState) {
    this.topics = topics;
    this.onMessage = onMessage;
    this.onState = onState;
    this.seen = new Map();
    this.epoch = null;
    this.pause = PAUSE_MIN_MS;
    this.socket = null;
    this.ping = null;
    this.stopped = false;
  }

  start() {
    this.onState(this.seen.size === 0 ? "connecting" : "reconnecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const credential = token();
    // The token goes in the first message, not in the URL, where logs would keep it.
    const socket = new WebSocket(`${scheme}://${location.host}/ws`, "stockpulse.v1.json");
    this.socket = socket;
    socket.onopen = () => {
      if (credential) socket.send(JSON.stringify({ op: "auth", token: credential }));
      const since = {};
      for (const [topic, seq] of this.seen) since[topic] = seq;
      const subscribe = { op: "subscribe", topics: this.topics, since };
      if (this.epoch !== null) subscribe.epoch = this.epoch;
      socket.send(JSON.stringify(subscribe));
      this.pause = PAUSE_MIN_MS;
      this.onState("live");
      this.ping = setInterval(() => socket.send('{"op":"ping"}'), PING_MS);
    };
    socket.onmessage = (event) => {
      let parsed;
      try {
        parsed = JSON.parse(event.data);
      } catch {
        return;
      }
      for (const message of Array.isArray(parsed) ? parsed : [parsed]) this.take(message);
    };
    socket.onclose = () => {
      clearInterval(this.ping);
      if (this.stopped) return;
      this.onState("reconnecting");
      const wait = this.pause * (0.8 + 0.4 * Math.random());
      this.pause = Math.min(this.pause * 2, PAUSE_MAX_MS);
      setTimeout(() => this.start(), wait);
    };
  }

  take(message) {
    if (message.topic !== undefined && message.seq !== undefined) {
      const fresh = message.type === "snapshot" || message.type === "resync";
      const last = this.seen.get(message.topic);
      if (fresh) {
        if (message.epoch !== undefined) this.epoch = message.epoch;
      } else if (last !== undefined && message.seq !== last + 1) {
        // A gap: start this connection again; resuming fills it or resyncs.
        this.socket.close();
        return;
      }
      this.seen.set(message.topic, message.seq);
    }
    this.onMessage(message);
  }

  /** Sends a client message if connected; returns whether it went. */
  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }
}
