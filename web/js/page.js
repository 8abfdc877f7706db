// What every page does first: its words and language toggle, the connection badge, and
// waiting for a room to show.

import { apply, onChange, t, toggle } from "./i18n.js";
import { pickRoom } from "./format.js";

/**
 * Applies the words, wires the language toggle to `render`, and returns the function that
 * shows the connection's state in the badge.
 */
export function setUp(render) {
  apply();
  document.getElementById("language").addEventListener("click", toggle);
  onChange(render);
  const connection = document.getElementById("connection");
  const showState = (value) => {
    connection.dataset.state = value;
    connection.textContent = t(value);
  };
  onChange(() => showState(connection.dataset.state));
  showState("connecting");
  return showState;
}

/** The room to show: asked again every few seconds until there is one. */
export async function waitForRoom() {
  for (;;) {
    let room = null;
    try {
      room = await pickRoom();
    } catch {
      room = null;
    }
    document.getElementById("empty").hidden = Boolean(room);
    if (room) return room;
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}
