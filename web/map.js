// The embedding map: a participant's and the researcher's view of a study's subject embeddings.

/** Scatter of the study's subject embeddings (PCA from the server): you, other participants, the
 * reference subjects of the demo world. */
export function embeddingMap(map, ownSession) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 100 70');
  svg.setAttribute('class', 'map');
  svg.setAttribute('id', 'embedding-map');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `Subject embeddings of ${map.points.length} people, projected to 2-D`);
  const xs = map.points.map((p) => p.x);
  const ys = map.points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => 6 + 88 * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
  const sy = (y) => 6 + 58 * (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5);
  for (const p of map.points) {
    const own = p.session_id === ownSession;
    const dot = document.createElementNS(ns, 'circle');
    dot.setAttribute('cx', sx(p.x));
    dot.setAttribute('cy', sy(p.y));
    dot.setAttribute('r', own ? 2.2 : 1.4);
    dot.setAttribute('class', own ? 'map-you' : `map-${p.kind}`);
    const title = document.createElementNS(ns, 'title');
    title.textContent = own ? 'you' : p.subject;
    dot.append(title);
    svg.append(dot);
    if (own || p.kind === 'reference') {
      const label = document.createElementNS(ns, 'text');
      label.setAttribute('x', sx(p.x) + 2.5);
      label.setAttribute('y', sy(p.y) + 1);
      label.textContent = own ? 'you' : p.subject;
      svg.append(label);
    }
  }
  return svg;
}
