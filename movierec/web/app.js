// The movierec page: search a title, give it stars, see recommendations. Every title and other text from
// the server is inserted with textContent, never as HTML, so a title holding "<script>" stays text.
"use strict";

const $ = (id) => document.getElementById(id);
const rated = new Map();  // movie_id -> {title, stars}
let scale = [1, 2, 3, 4, 5];
let scoreName = "predicted rating";
let predictedName = null;  // what a row's "predicted" is (see /health), null for top-N models
let searchSeq = 0, recSeq = 0, similarSeq = 0;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `The server answered ${response.status}.`);
  }
  return body;
}

function showStatus(message) { $("status").textContent = message || ""; }

function movieLine(m) {
  const parts = [];
  if (m.year) parts.push(m.year);
  if (m.genres && m.genres.length) parts.push(m.genres.join(", "));
  if (typeof m.predicted === "number") {  // the model's own prediction, beside the score the list is ordered by
    parts.push(predictedName === "like probability" ? `P(like) ${Math.round(m.predicted * 100)}%`
                                                    : `predicted ${m.predicted.toFixed(1)} stars`);
  }
  return parts.join(" · ");
}

// -- search ------------------------------------------------------------------------------------------------
let searchTimer = null;
function onSearchInput() {
  clearTimeout(searchTimer);
  const q = $("search").value.trim();
  if (!q) { hideSuggestions(); return; }
  searchTimer = setTimeout(() => search(q), 120);
}

async function search(q) {
  const seq = ++searchSeq;
  let hits;
  try {
    hits = await api(`movies?q=${encodeURIComponent(q)}&n=8`);
  } catch (e) {
    if (seq === searchSeq) showStatus(e.message);
    return;
  }
  if (seq !== searchSeq) return;  // a later keystroke's answer wins
  const list = $("suggestions");
  list.replaceChildren();
  if (!hits.length) {
    list.append(el("li", "muted", "No title matches."));
  }
  for (const m of hits) {
    const li = el("li");
    li.setAttribute("role", "option");
    const b = el("button", "suggestion");
    b.type = "button";
    b.dataset.movieId = m.movie_id;
    b.append(el("span", "title", m.title), el("br"),
             el("span", "muted", `${movieLine(m)}${movieLine(m) ? " · " : ""}${m.ratings} ratings`));
    b.addEventListener("click", () => pick(m));
    li.append(b);
    list.append(li);
  }
  list.hidden = false;
  $("search").setAttribute("aria-expanded", "true");
}

function hideSuggestions() {
  searchSeq++;
  $("suggestions").hidden = true;
  $("suggestions").replaceChildren();
  $("search").setAttribute("aria-expanded", "false");
}

function pick(movie) {
  hideSuggestions();
  $("search").value = "";
  if (!rated.has(movie.movie_id)) rated.set(movie.movie_id, {title: movie.title, stars: null});
  renderRated();
  const row = document.querySelector(`#rated li[data-movie-id="${movie.movie_id}"] .stars button`);
  if (row) row.focus();
}

// -- the user's ratings ----------------------------------------------------------------------------------
function renderRated() {
  const list = $("rated");
  list.replaceChildren();
  for (const [id, r] of rated) {
    const li = el("li");
    li.dataset.movieId = id;
    const title = el("button", "link title", r.title);
    title.type = "button";
    title.title = "Show similar movies";
    title.addEventListener("click", () => showSimilar(id, r.title));
    const stars = el("div", "stars");
    stars.setAttribute("role", "group");
    stars.setAttribute("aria-label", `Stars for ${r.title}`);
    for (const value of scale) {
      const b = el("button", r.stars !== null && value <= r.stars ? "star on" : "star", `${value}★`);
      b.type = "button";
      b.dataset.stars = value;
      b.setAttribute("aria-pressed", String(r.stars === value));
      b.addEventListener("click", () => { r.stars = value; renderRated(); refresh(); });
      stars.append(b);
    }
    const remove = el("button", "link remove", "remove");
    remove.type = "button";
    remove.addEventListener("click", () => { rated.delete(id); renderRated(); refresh(); });
    stars.append(remove);
    li.append(title, stars);
    list.append(li);
  }
  $("no-ratings").hidden = [...rated.values()].some((r) => r.stars !== null);
}

// -- about you (models that know people by their age, gender, occupation) --------------------------------
function aboutYou() {
  // The query of what the person said of themselves, "" when nothing.
  const query = new URLSearchParams();
  for (const field of ["age", "gender", "occupation"]) {
    const value = $(field).value.trim();
    if (!$(`${field}-field`).hidden && value) query.set(field, value);
  }
  return query;
}

function setUpAbout(people, unrated) {
  for (const field of ["gender", "occupation"]) {
    for (const value of people[field] || []) {
      const option = el("option", null, value);
      option.value = value;
      $(field).append(option);
    }
  }
  for (const field of ["age", "gender", "occupation"]) $(`${field}-field`).hidden = !(field in people);
  $("about").hidden = Object.keys(people).length === 0;
  $("unrated-field").hidden = !unrated;
  if (Object.keys(people).length) {
    $("no-ratings").textContent = "Rate a movie or two, or say something about yourself, and recommendations " +
                                  "appear here; each change updates them.";
  }
  for (const id of ["age", "gender", "occupation", "unrated"]) $(id).addEventListener("change", refresh);
}

// -- recommendations -------------------------------------------------------------------------------------
async function refresh() {
  const ratings = [...rated].filter(([, r]) => r.stars !== null).map(([id, r]) => ({movie: id, stars: r.stars}));
  const query = aboutYou();
  const seq = ++recSeq;
  if (!ratings.length && !query.toString()) {
    $("recs").replaceChildren();
    showStatus("");
    return;
  }
  query.set("n", "10");
  if (!$("unrated-field").hidden && $("unrated").checked) query.set("include_unrated", "true");
  let rows;
  try {
    rows = await api(`recommend?${query}`, {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(ratings)});
  } catch (e) {
    if (seq === recSeq) showStatus(e.message);
    return;
  }
  if (seq !== recSeq) return;
  showStatus(rows.length ? "" : "No movies to recommend.");
  renderRows($("recs"), rows, true);
}

function renderRows(list, rows, withBecause) {
  list.replaceChildren();
  for (const r of rows) {
    const li = el("li", "rec");
    const percent = scoreName === "like probability" || scoreName === "match";
    const score = el("span", "score", percent ? `${Math.round(r.score * 100)}%` : r.score.toFixed(2));
    score.title = scoreName === "match" ? "the chance you would pick and like it" : scoreName;
    const title = el("button", "link title", `${r.rank}. ${r.title}`);
    title.type = "button";
    title.title = "Show similar movies";
    title.addEventListener("click", () => showSimilar(r.movie_id, r.title));
    li.append(score, title, el("div", "muted", movieLine(r)));
    if (withBecause && r.because_you_liked) li.append(el("div", "because", `Because you liked ${r.because_you_liked}`));
    list.append(li);
  }
}

async function showSimilar(movieId, title) {
  const seq = ++similarSeq;
  let answer;
  try {
    answer = await api(`similar?movie=${encodeURIComponent(movieId)}&n=10`);
  } catch (e) {
    if (seq === similarSeq) showStatus(e.message);
    return;
  }
  if (seq !== similarSeq) return;
  $("similar-title").textContent = `Movies like ${answer.title}`;
  renderRows($("similar"), answer.similar, false);
  $("similar-box").hidden = false;
  $("similar-box").scrollIntoView({behavior: "smooth", block: "nearest"});
}

// -- start -------------------------------------------------------------------------------------------------
async function start() {
  $("search").addEventListener("input", onSearchInput);
  $("search").addEventListener("keydown", (event) => {
    if (event.key === "Escape") hideSuggestions();
    if (event.key === "Enter" || event.key === "ArrowDown") {
      const first = document.querySelector("#suggestions button");
      if (first) { event.preventDefault(); event.key === "Enter" ? first.click() : first.focus(); }
    }
  });
  try {
    const h = await api("health");
    const whole = h.stars.filter((s) => Number.isInteger(s));
    scale = whole.length ? whole : h.stars;
    scoreName = h.score;
    predictedName = h.predicted || null;
    $("model").textContent = `Model ${h.model} (${h.algorithm}), trained on ${h.dataset}. Numbers: ${h.score}.`;
    setUpAbout(h.people || {}, Boolean(h.unrated_movies));
  } catch (e) {
    $("model").textContent = e.message;
  }
}

document.addEventListener("DOMContentLoaded", start);
