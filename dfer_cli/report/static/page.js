// The page's one behaviour: the time axis and the video move together. Clicking a lane (or the arrow keys
// on the focused axis) seeks the video; the cursor follows playback.
(() => {
  "use strict";
  const svg = document.getElementById("timeline");
  const video = document.getElementById("video");
  const cursor = document.getElementById("cursor");
  const now = document.getElementById("now");
  if (!svg) return;
  const duration = Number(svg.dataset.duration), x0 = Number(svg.dataset.x0), width = Number(svg.dataset.width);
  const clamp = (t) => Math.min(Math.max(t, 0), duration);

  function show(t) {
    const x = x0 + width * (duration > 0 ? clamp(t) / duration : 0);
    cursor.setAttribute("x1", x.toFixed(2));
    cursor.setAttribute("x2", x.toFixed(2));
    svg.setAttribute("aria-valuenow", clamp(t).toFixed(2));
    svg.setAttribute("aria-valuetext", clamp(t).toFixed(2) + " s");
    if (now) now.textContent = clamp(t).toFixed(2) + " s";
  }
  function seek(t) {
    t = clamp(t);
    if (video) video.currentTime = t;
    show(t);
  }
  function timeAt(event) {
    const point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const local = point.matrixTransform(svg.getScreenCTM().inverse());
    return (local.x - x0) / width * duration;
  }
  svg.addEventListener("click", (event) => seek(timeAt(event)));
  svg.addEventListener("keydown", (event) => {
    const here = video ? video.currentTime : Number(svg.getAttribute("aria-valuenow"));
    const step = event.shiftKey ? 5 : 1;
    const moves = { ArrowLeft: here - step, ArrowRight: here + step, Home: 0, End: duration };
    if (event.key in moves) {
      seek(moves[event.key]);
    } else if ((event.key === " " || event.key === "Enter") && video) {
      if (video.paused) video.play().catch(() => {}); else video.pause();
    } else {
      return;
    }
    event.preventDefault();
  });
  for (const button of document.querySelectorAll("button.seek")) {
    button.addEventListener("click", () => {
      seek(Number(button.dataset.t));
      if (video) video.play().catch(() => {});
    });
  }
  if (video) {
    const missing = document.getElementById("video-missing");
    const failed = () => { if (missing) missing.hidden = false; };
    video.addEventListener("error", failed);
    if (video.error) failed(); // it failed while the page was still being read
    video.addEventListener("timeupdate", () => show(video.currentTime));
    video.addEventListener("seeked", () => show(video.currentTime));
    const follow = () => { show(video.currentTime); if (!video.paused && !video.ended) requestAnimationFrame(follow); };
    video.addEventListener("play", () => requestAnimationFrame(follow));
  }
  show(0);
})();
