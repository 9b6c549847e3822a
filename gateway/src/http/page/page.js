// The chat page: shows what the gateway streams (the owner's chat, the
// review cards) and sends messages and decisions. Text is always set as
// text, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
let source = null;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showNote(id, note) {
  $(id).hidden = !note;
  $(id).textContent = note || "";
}

function renderChat(view) {
  const owner = $("owner").value;
  const list = $("chat");
  list.replaceChildren(...view.chat.map((line) => {
    const item = el("li", line.author === "" ? "agent" : (line.author === owner ? "own" : "other"));
    item.append(el("span", "who", line.author === "" ? "Book-E" : line.author));
    item.append(document.createTextNode(line.text));
    if (line.files.length) item.append(el("span", "files", "📎 " + line.files.join(", ")));
    return item;
  }));
  list.lastElementChild?.scrollIntoView({ block: "end" });
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || answer.detail || response.statusText);
  return answer;
}

function decide(card, approve, reasonInput) {
  const body = { reviewer: $("reviewer").value, value: card.value, approve };
  if (!approve) body.reason = reasonInput.value;
  post("/page/decisions", body)
    .then((answer) => { $("status").textContent = answer.decided ? "Decision recorded." : answer.refused; })
    .catch((e) => { $("status").textContent = "Not recorded: " + e.message; });
}

function renderCards(view) {
  const notes = view.card_notes;
  $("cards").replaceChildren(...view.cards.map((entry) => {
    const card = entry.card;
    const item = el("li", "card");
    item.dataset.state = entry.state;
    item.append(el("strong", "title", card.title));
    item.append(el("pre", "writes", card.writes));
    item.append(el("div", "context", card.context));
    item.append(el("pre", "evidence", "Evidence\n" + card.evidence));
    if (entry.agent) item.append(el("div", "agent", entry.agent));
    for (const note of notes.filter((n) => n.thread === entry.thread)) item.append(el("div", "thread-note", note.text));
    const decided = entry.decided_by ? " by " + entry.decided_by : "";
    item.append(el("div", "state", entry.state.replace("_", " ") + decided));
    if (entry.state === "review_requested") {
      const reason = el("input", "reason");
      reason.placeholder = "Reason (for Reject)";
      const approve = el("button", "approve", "Approve");
      const reject = el("button", "reject", "Reject");
      approve.onclick = () => decide(card, true, reason);
      reject.onclick = () => decide(card, false, reason);
      item.append(reason, approve, reject);
    }
    return item;
  }));
}

function listen() {
  if (source) source.close();
  const query = new URLSearchParams({ owner: $("owner").value, reviewer: $("reviewer").value });
  source = new EventSource("/page/stream?" + query);
  source.addEventListener("view", (event) => {
    const view = JSON.parse(event.data);
    $("banner").hidden = !view.scripted_model;
    showNote("chat-note", view.chat_note);
    showNote("review-note", view.review_note);
    renderChat(view);
    renderCards(view);
  });
}

// A fresh message id (crypto.randomUUID needs a secure context).
function messageId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve({ name: file.name, data: reader.result.split(",")[1] || "" });
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

$("compose").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value;
  const files = await Promise.all([...$("files").files].map(readFile));
  if (!text.trim() && !files.length) return;
  $("status").textContent = "Sending…";
  const body = { user: $("owner").value, id: messageId(), text, files };
  try {
    const answer = await post("/page/messages", body);
    $("status").textContent = answer.outcome === "accepted" ? "Sent." : "Not taken: " + answer.outcome.replaceAll("_", " ");
    $("text").value = "";
    $("files").value = "";
  } catch (e) {
    $("status").textContent = "Not sent: " + e.message;
  }
});

$("owner").addEventListener("change", listen);
$("reviewer").addEventListener("change", listen);
listen();
