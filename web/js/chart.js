// The consumption curve on a canvas: the whole show on the x axis, units on the y axis; the
// yellow, orange and red thresholds as bands, the plan as a dashed line, what was consumed
// as a solid line growing live, and a marker at now. Redrawn from the data each time, so it
// holds no state and grows nothing.

const COLORS = {
  grid: "#2a3444",
  text: "#8a96a8",
  plan: "#7aa2ff",
  actual: "#f5f7fa",
  yellow: "rgba(240, 200, 40, 0.14)",
  orange: "rgba(255, 140, 30, 0.16)",
  red: "rgba(240, 60, 60, 0.18)",
  now: "#5d6b80",
};

/** The same on paper: dark lines on white. */
export const LIGHT = {
  grid: "#d5dae1",
  text: "#4a5464",
  plan: "#2456c9",
  actual: "#111418",
  yellow: "rgba(240, 200, 40, 0.25)",
  orange: "rgba(255, 140, 30, 0.25)",
  red: "rgba(240, 60, 60, 0.25)",
  now: "#8a96a8",
};

/**
 * @param {HTMLCanvasElement} canvas
 * @param {object} listing a listing of the room view (series, forecast, thresholds)
 * @param {number} showSeconds the show's length
 * @param {number} elapsedSeconds now, into the show
 * @param {{plan: string, actual: string, hour: string}} labels (`hour` with `{n}` for the number)
 * @param {object} [palette] the colours (the screen's dark ones unless given)
 */
export function drawCurve(canvas, listing, showSeconds, elapsedSeconds, labels, palette = COLORS) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  const pad = { left: 56, right: 16, top: 16, bottom: 28 };
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  const { series, forecast, thresholds } = listing;
  const actual = series.actual;
  const top = Math.max(
    forecast * Math.max(thresholds.red, 1) * 1.1,
    ...actual,
    ...series.plan.map((corner) => corner[1]),
    1,
  );
  const x = (seconds) => pad.left + (plotWidth * seconds) / Math.max(showSeconds, 1);
  const y = (units) => pad.top + plotHeight - (plotHeight * units) / top;

  // Threshold bands: yellow to orange, orange to red, red and above.
  const bands = [
    [thresholds.yellow, thresholds.orange, palette.yellow],
    [thresholds.orange, thresholds.red, palette.orange],
    [thresholds.red, top / forecast, palette.red],
  ];
  for (const [from, to, color] of bands) {
    context.fillStyle = color;
    const upper = y(Math.min(to * forecast, top));
    const lower = y(from * forecast);
    context.fillRect(pad.left, upper, plotWidth, Math.max(0, lower - upper));
  }

  // Grid and labels.
  context.strokeStyle = palette.grid;
  context.fillStyle = palette.text;
  context.lineWidth = 1;
  context.font = "13px system-ui, sans-serif";
  for (let step = 0; step <= 4; step += 1) {
    const units = (top * step) / 4;
    const row = y(units);
    context.beginPath();
    context.moveTo(pad.left, row);
    context.lineTo(pad.left + plotWidth, row);
    context.stroke();
    context.fillText(String(Math.round(units)), 6, row + 4);
  }
  for (let hour = 0; hour * 3600 <= showSeconds; hour += 1) {
    context.fillText(labels.hour.replace("{n}", String(hour)), x(hour * 3600) - 6, height - 8);
  }

  // The plan: the corners of a line.
  context.strokeStyle = palette.plan;
  context.setLineDash([8, 6]);
  context.lineWidth = 2;
  context.beginPath();
  series.plan.forEach(([seconds, units], index) => {
    if (index === 0) context.moveTo(x(seconds), y(units));
    else context.lineTo(x(seconds), y(units));
  });
  context.stroke();
  context.setLineDash([]);

  // What was consumed, bucket by bucket, up to now.
  context.strokeStyle = palette.actual;
  context.lineWidth = 3;
  context.beginPath();
  context.moveTo(x(0), y(series.before_start));
  actual.forEach((units, index) => {
    context.lineTo(x(Math.min((index + 1) * series.bucket_s, elapsedSeconds)), y(units));
  });
  context.stroke();

  // Now.
  context.strokeStyle = palette.now;
  context.beginPath();
  context.moveTo(x(elapsedSeconds), pad.top);
  context.lineTo(x(elapsedSeconds), pad.top + plotHeight);
  context.stroke();

  // Legend.
  context.fillStyle = palette.plan;
  context.fillText(`- - ${labels.plan}`, pad.left + 8, pad.top + 14);
  context.fillStyle = palette.actual;
  context.fillText(`—— ${labels.actual}`, pad.left + 96, pad.top + 14);
}
