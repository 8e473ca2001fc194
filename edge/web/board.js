/**
 * An SVG chess board: draws a FEN, reports clicks on squares.  No rules: the server
 * judges every move, the board only shows what the client's state says.
 *
 * Every square is a <rect data-square="e2">; pieces are Unicode glyphs drawn over it
 * with `pointer-events: none`, so a click always lands on the square.
 */

const SVG = "http://www.w3.org/2000/svg";
const FILES = "abcdefgh";
const GLYPHS = { k: "\u265A", q: "\u265B", r: "\u265C", b: "\u265D", n: "\u265E", p: "\u265F" };

/** FEN piece placement -> {square: piece letter} ("P" white pawn, "k" black king...). */
export function parsePlacement(fen) {
  const pieces = {};
  const rows = fen.split(" ")[0].split("/");
  rows.forEach((row, i) => {
    let file = 0;
    for (const ch of row) {
      if (/\d/.test(ch)) file += Number(ch);
      else {
        pieces[`${FILES[file]}${8 - i}`] = ch;
        file += 1;
      }
    }
  });
  return pieces;
}

export class Board {
  /**
   * @param {HTMLElement} host where the SVG goes
   * @param {(square: string) => void} onSquare called with "e2" on every click
   */
  constructor(host, onSquare) {
    this.host = host;
    this.flipped = false;
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("viewBox", "0 0 8 8");
    this.svg.setAttribute("role", "img");
    this.svg.classList.add("board-svg");
    this.svg.addEventListener("click", (event) => {
      const square = event.target.closest?.("[data-square]")?.dataset.square;
      if (square) onSquare(square);
    });
    host.replaceChildren(this.svg);
  }

  /** Draw `fen`, with `selected` and the `lastMove` ("e2e4") highlighted. */
  render(fen, { selected = null, lastMove = null, flipped = false } = {}) {
    this.flipped = flipped;
    const pieces = parsePlacement(fen);
    const marked = new Set(lastMove ? [lastMove.slice(0, 2), lastMove.slice(2, 4)] : []);
    const nodes = [];
    for (let rank = 8; rank >= 1; rank -= 1) {
      for (let f = 0; f < 8; f += 1) {
        const square = `${FILES[f]}${rank}`;
        const [x, y] = this._xy(f, rank);
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", x);
        rect.setAttribute("y", y);
        rect.setAttribute("width", 1);
        rect.setAttribute("height", 1);
        rect.dataset.square = square;
        rect.classList.add((f + rank) % 2 === 1 ? "dark" : "light"); // a1 is dark
        if (marked.has(square)) rect.classList.add("last");
        if (square === selected) rect.classList.add("selected");
        nodes.push(rect);
      }
    }
    for (const [square, piece] of Object.entries(pieces)) {
      const f = FILES.indexOf(square[0]);
      const [x, y] = this._xy(f, Number(square[1]));
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("x", x + 0.5);
      text.setAttribute("y", y + 0.56);
      text.classList.add("piece", piece === piece.toUpperCase() ? "white" : "black");
      text.dataset.piece = piece;
      text.dataset.on = square;
      text.textContent = GLYPHS[piece.toLowerCase()];
      nodes.push(text);
    }
    for (let i = 0; i < 8; i += 1) {
      const label = document.createElementNS(SVG, "text");
      const f = flipped ? 7 - i : i;
      label.setAttribute("x", i + 0.96);
      label.setAttribute("y", 7.96);
      label.classList.add("coord");
      label.textContent = FILES[f];
      nodes.push(label);
    }
    this.svg.replaceChildren(...nodes);
  }

  _xy(file, rank) {
    return this.flipped ? [7 - file, rank - 1] : [file, 8 - rank];
  }
}
