// Runs the page's script (serving/static/index.html) under Node with a minimal DOM, draws the score
// chart for the points given as JSON on argv[2] and prints the SVG's elements as JSON: tag,
// attributes, text, children. For the chart's logic where no browser is installed.
const fs = require("fs");

class Node_ {
  constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; this.textContent = ""; this.value = ""; }
  setAttribute(name, value) { this.attrs[name] = value; }
  getAttribute(name) { return this.attrs[name]; }
  append(...nodes) { this.children.push(...nodes); }
  replaceChildren(...nodes) { this.children = nodes; }
  addEventListener() {}
  querySelector() { return new Node_("stub"); }
  after() {}
  toJSON() { return { tag: this.tag, attrs: this.attrs, text: this.textContent, children: this.children }; }
}
const byId = {};
global.document = {
  getElementById: (id) => (byId[id] = byId[id] || new Node_(id)),
  createElement: (tag) => new Node_(tag),
  createElementNS: (_, tag) => new Node_(tag),
};
global.sessionStorage = { getItem: () => null, setItem: () => {} };
global.fetch = () => new Promise(() => {});  // the page's start-up requests never answer here

const html = fs.readFileSync(process.argv[3], "utf8");
const script = html.match(/<script>([\s\S]*)<\/script>/)[1];
new Function(script + "\nglobalThis.sparkline = sparkline;")();
globalThis.sparkline(JSON.parse(process.argv[2]));
console.log(JSON.stringify({ svg: byId.sparkline, note: byId["sparkline-note"].textContent }));
