// The queue (every queued and running job of this server, or of this key), the jobs this page submitted (followed
// through their event streams: progress, previews, results) and the history of finished jobs, paged, newest first.

import { $ } from "./form.js";

const QUEUE_POLL_MS = 1500;
const HISTORY_PAGE = 12;

function promptOf(job) {
  const prompt = job.request?.prompt ?? "";
  return prompt || (job.request?.operation === "upscale" ? "upscale" : "(no prompt)");
}

export class Jobs {
  constructor(api, { onDone, onOpen, onError }) {
    this.api = api;
    this.onDone = onDone;
    this.onOpen = onOpen;
    this.onError = onError;
    this.historyOffset = 0;
    this.followed = new Map(); // job id → AbortController of its event stream
    this.timer = null;
  }

  start() {
    this.refreshQueue();
    this.refreshHistory();
    this.timer = setInterval(() => this.refreshQueue(), QUEUE_POLL_MS);
  }

  async refreshQueue() {
    try {
      const [running, queued] = await Promise.all([
        this.api.get("/v1/jobs?status=running&limit=100"),
        this.api.get("/v1/jobs?status=queued&limit=100"),
      ]);
      const jobs = [...running.data, ...queued.data.sort((a, b) => (a.queue_position ?? 0) - (b.queue_position ?? 0))];
      $("queue").replaceChildren(...jobs.map((job) => this.queueItem(job)));
    } catch (error) {
      if (error.status !== 401) this.onError?.(error);
    }
  }

  queueItem(job) {
    const item = document.createElement("li");
    item.dataset.jobId = job.id;
    const status = document.createElement("span");
    status.className = "muted";
    status.textContent =
      job.status === "queued" ? `#${(job.queue_position ?? 0) + 1} queued` : `${Math.round(job.progress * 100)} %`;
    const prompt = document.createElement("span");
    prompt.className = "prompt";
    prompt.textContent = promptOf(job);
    prompt.title = prompt.textContent;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = job.progress;
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "quiet danger";
    cancel.textContent = job.cancel_requested ? "Cancelling" : "Cancel";
    cancel.disabled = job.cancel_requested;
    cancel.setAttribute("aria-label", `cancel ${prompt.textContent}`);
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await this.api.delete(`/v1/jobs/${encodeURIComponent(job.id)}`);
      } catch (error) {
        this.onError?.(error);
      }
      this.refreshQueue();
    });
    item.append(prompt, bar, status, cancel);
    return item;
  }

  // Follow a job this page submitted: progress and previews into the "current" box, results into the gallery.
  async follow(job) {
    const controller = new AbortController();
    this.followed.set(job.id, controller);
    this.showCurrent(job);
    try {
      await this.api.events(
        job.id,
        (name, data) => {
          if (name === "preview") {
            $("preview").src = data.image;
            $("preview").hidden = false;
            return;
          }
          this.showCurrent(data);
          if (name === "done" || name === "failed" || name === "cancelled") this.finish(data);
        },
        controller.signal,
      );
    } catch (error) {
      if (error.name !== "AbortError") this.onError?.(error);
    } finally {
      this.followed.delete(job.id);
      if (!this.followed.size) $("current").hidden = true;
    }
  }

  showCurrent(job) {
    $("current").hidden = false;
    const label = job.status === "queued" ? `Queued (#${(job.queue_position ?? 0) + 1})` : job.status;
    $("current-title").textContent = `${label}: ${promptOf(job)}`;
    $("current-progress").value = job.progress;
    $("current-step").textContent = job.total_steps ? `step ${job.step} / ${job.total_steps}` : "";
  }

  finish(job) {
    $("preview").hidden = true;
    if (job.status === "succeeded") {
      const gallery = $("gallery");
      job.images.forEach((url, index) => {
        const image = document.createElement("img");
        image.src = url;
        image.alt = `${promptOf(job)} (seed ${job.seeds[index] ?? "?"})`;
        image.addEventListener("click", () => this.onOpen(job, index));
        gallery.prepend(image);
      });
      this.onDone?.(job);
    } else if (job.status === "failed") {
      this.onError?.({ message: `job failed: ${job.error?.message ?? job.error?.code ?? "unknown error"}` });
    }
    this.refreshHistory();
    this.refreshQueue();
  }

  async refreshHistory(offset = this.historyOffset) {
    try {
      const page = await this.api.get(`/v1/jobs?status=succeeded&limit=${HISTORY_PAGE}&offset=${offset}`);
      this.historyOffset = offset;
      const figures = page.data.map((job) => {
        const figure = document.createElement("figure");
        const image = document.createElement("img");
        image.src = job.images[0] ?? "";
        image.alt = promptOf(job);
        image.loading = "lazy";
        image.addEventListener("click", () => this.onOpen(job, 0));
        const caption = document.createElement("figcaption");
        caption.textContent = `${job.seeds[0] ?? ""} · ${promptOf(job)}`;
        caption.title = caption.textContent;
        figure.append(image, caption);
        return figure;
      });
      $("history").replaceChildren(...figures);
      const pageNumber = Math.floor(offset / HISTORY_PAGE) + 1;
      const pages = Math.max(1, Math.ceil(page.total / HISTORY_PAGE));
      $("history-page").textContent = page.total ? `page ${pageNumber} of ${pages} (${page.total} jobs)` : "no results yet";
      $("history-newer").disabled = offset === 0;
      $("history-older").disabled = !page.has_more;
    } catch (error) {
      if (error.status !== 401) this.onError?.(error);
    }
  }

  newer() {
    this.refreshHistory(Math.max(0, this.historyOffset - HISTORY_PAGE));
  }

  older() {
    this.refreshHistory(this.historyOffset + HISTORY_PAGE);
  }
}
