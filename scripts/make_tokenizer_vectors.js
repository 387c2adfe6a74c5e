// Writes tokenizer test vectors ([{text, ids}, ...]) computed by the npm package gpt-3-encoder,
// a JavaScript port of GPT-2's encoder written independently of polargpt's C++ one.
// Usage: node scripts/make_tokenizer_vectors.js NODE_MODULES_DIR OUT.json
'use strict';
const fs = require('fs');
const path = require('path');

const [modulesDir, outPath] = process.argv.slice(2);
const { encode } = require(path.resolve(modulesDir, 'gpt-3-encoder'));

const longParagraph =
  'The Brown University Standard Corpus of Present-Day American English was compiled in the ' +
  '1960s by Henry Kučera and W. Nelson Francis. It contains 500 samples of English-language ' +
  'text, totalling roughly one million words, compiled from works published in the United States ' +
  "in 1961. Each sample began at a random sentence-boundary in the article or other unit chosen, " +
  "and continued up to the first sentence-boundary after 2,000 words. In a very few cases " +
  "miscounts led to samples being just under 2,000 words. \"It's a landmark,\" they'd say; " +
  "others weren't so sure (see p. 42, §3.1) -- but nobody's arguing about its size: ~1,014,312 words!\n\n" +
  '    Indented line with trailing spaces   \n\tTabbed line\t\tend.';

const texts = [
  // plain English
  'Hello world',
  'The quick brown fox jumps over the lazy dog.',
  'hello',
  ' hello',
  'GPT-2 is a language model.',
  // contractions, and their uppercase forms (not contractions to the pattern)
  "it's",
  "don't can't won't",
  "they're we've I'm you'll he'd",
  "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
  "John's book isn't John'S",
  "'s 't 're 've 'm 'll 'd",
  "rock 'n' roll, ''quoted'' and 'single'",
  // digits
  '0 1 12 123 1234 12345 123456 3.14159 1,000,000',
  'In 2024, 42% of 7 people paid $19.99 each.',
  '٣٤ ١٢٣ (Arabic-Indic digits) ²³ ½ Ⅻ',
  // punctuation
  'Hello, world! How are you? I am fine... (really) [yes] {no} <tag> "quote"',
  '!!!??? ...--- @#$%^&*()_+=~`|\\/',
  'a.b.c e-mail https://example.com/path?q=1&r=2#frag',
  // spaces, tabs, newlines
  ' leading space',
  'trailing space ',
  '  two leading spaces',
  'multiple   spaces   between   words',
  '      ',
  ' ',
  'word\tword\t\ttabs',
  '\t\tleading tabs',
  'line one\nline two\n',
  'paragraph one.\n\nparagraph two.\n\n\nthree newlines',
  '\n',
  '\n\n',
  ' \n \n ',
  'windows\r\nline endings\r\n',
  'mixed \t\n whitespace \n\t end',
  // accents and other Latin
  'café naïve résumé façade coöperate',
  'Ångström Øresund Straße Łódź İstanbul',
  'CAFÉ NAÏVE',
  // CJK
  '你好，世界！',
  '日本語のテキストです。カタカナとひらがな。',
  '한국어 텍스트',
  // emoji, including ZWJ sequences, skin tones and flags
  'I love 🍕 and 🎉!',
  '👨‍👩‍👧‍👦 family',
  '👍🏽 thumbs 🏳️‍🌈 flag 🇺🇸🇯🇵',
  '❤️‍🔥',
  // mixed scripts
  'English, Русский, Ελληνικά, עברית, العربية, हिन्दी, ไทย',
  'naïve 日本 café 😀 123 ok',
  'Ελληνικά: αβγδε ΑΒΓΔΕ',
  // the end-of-text marker is ordinary text here
  'Before<|endoftext|>After',
  // a long paragraph
  longParagraph,
];

const vectors = texts.map((text) => ({ text, ids: encode(text) }));
// One vector per line keeps diffs readable.
fs.writeFileSync(outPath, '[\n' + vectors.map((v) => JSON.stringify(v)).join(',\n') + '\n]\n');
console.log(`wrote ${vectors.length} vectors to ${outPath}`);
