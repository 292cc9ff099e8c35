// The inpainting mask painter: a canvas over the source image, at the image's own resolution. White paint marks the
// area to regenerate (A1111's convention, what the API's `mask` takes); the eraser takes paint off. Pointer events
// cover mouse, pen and touch.

export class MaskPainter {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.erasing = false;
    this.size = 24;
    this.painted = false;
    this.last = null;
    canvas.addEventListener("pointerdown", (event) => this.down(event));
    canvas.addEventListener("pointermove", (event) => this.move(event));
    for (const name of ["pointerup", "pointercancel", "pointerleave"]) {
      canvas.addEventListener(name, () => {
        this.last = null;
      });
    }
  }

  // Size the canvas to the image (pixels, not CSS) and clear it.
  reset(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
    this.clear();
  }

  clear() {
    this.context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.painted = false;
  }

  // Paint where there was none and none where there was: the mask of "everything but this".
  invert() {
    const { width, height } = this.canvas;
    const pixels = this.context.getImageData(0, 0, width, height);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      const on = data[i + 3] > 127;
      data[i] = data[i + 1] = data[i + 2] = 255;
      data[i + 3] = on ? 0 : 255;
    }
    this.context.putImageData(pixels, 0, 0);
    this.painted = true;
  }

  point(event) {
    const box = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) / box.width) * this.canvas.width,
      y: ((event.clientY - box.top) / box.height) * this.canvas.height,
    };
  }

  // The brush size is in screen pixels: the same stroke on a small image shown large covers the same area.
  radius() {
    const box = this.canvas.getBoundingClientRect();
    return Math.max(0.5, (this.size / 2) * (this.canvas.width / Math.max(1, box.width)));
  }

  down(event) {
    this.canvas.setPointerCapture?.(event.pointerId);
    this.last = this.point(event);
    this.stroke(this.last, this.last);
    event.preventDefault();
  }

  move(event) {
    if (!this.last) return;
    const next = this.point(event);
    this.stroke(this.last, next);
    this.last = next;
    event.preventDefault();
  }

  stroke(from, to) {
    const context = this.context;
    context.globalCompositeOperation = this.erasing ? "destination-out" : "source-over";
    context.strokeStyle = context.fillStyle = "#ffffff";
    context.lineCap = context.lineJoin = "round";
    context.lineWidth = this.radius() * 2;
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(to.x, to.y);
    context.stroke();
    this.painted = true;
  }

  // The mask as the API takes it: a PNG data URL, white = regenerate, black = keep; null when nothing is painted.
  toDataURL() {
    const { width, height } = this.canvas;
    const pixels = this.context.getImageData(0, 0, width, height).data;
    if (!pixels.some((value, index) => index % 4 === 3 && value > 127)) return null;
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const context = out.getContext("2d");
    context.fillStyle = "#000000";
    context.fillRect(0, 0, width, height);
    context.drawImage(this.canvas, 0, 0);
    return out.toDataURL("image/png");
  }
}
