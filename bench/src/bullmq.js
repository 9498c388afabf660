// The BullMQ peer of the `drain` scenario, written next to a fresh `npm install bullmq
// ioredis` and run by the bench. Environment: REDIS_URL, BQ_PREFIX, BQ_NAME, BQ_JOBS,
// BQ_WORKERS, BQ_CONCURRENCY, BQ_STALL_MS. The parent (a) adds BQ_JOBS no-op jobs with addBulk in chunks
// of 1,000, (b) forks BQ_WORKERS worker processes, each a `new Worker(name, async () => {},
// {concurrency})`, (c) polls getJobCounts until every job completed, prints one JSON line
// and obliterates the queue. Jobs keep BullMQ's defaults (completed jobs are kept, as
// agentq keeps its runs).
'use strict';
const { fork } = require('child_process');
const { Queue, Worker } = require('bullmq');

function connection() {
  const u = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
  const db = Number((u.pathname || '/0').slice(1) || 0);
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    username: u.username || undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db,
    maxRetriesPerRequest: null,
  };
}

const name = process.env.BQ_NAME;
const prefix = process.env.BQ_PREFIX;

async function child() {
  const concurrency = Number(process.env.BQ_CONCURRENCY);
  let first = true;
  const worker = new Worker(name, async () => {}, { connection: connection(), prefix, concurrency });
  worker.on('active', () => {
    if (first) {
      first = false;
      process.send({ firstActive: Date.now() });
    }
  });
  worker.on('error', (e) => console.error('worker error', e.message));
  process.on('message', async (m) => {
    if (m === 'stop') {
      await worker.close();
      process.exit(0);
    }
  });
}

async function waitAll(queue, jobs, stallMs) {
  let last = -1;
  let lastChange = Date.now();
  for (;;) {
    const c = await queue.getJobCounts('completed', 'failed');
    const done = c.completed + c.failed;
    if (done >= jobs) return { done: Date.now(), failed: c.failed };
    if (done !== last) {
      last = done;
      lastChange = Date.now();
    }
    if (Date.now() - lastChange > stallMs) {
      throw new Error(`stalled: ${done}/${jobs} done, none for ${stallMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function parent() {
  const jobs = Number(process.env.BQ_JOBS);
  const workers = Number(process.env.BQ_WORKERS);
  const queue = new Queue(name, { connection: connection(), prefix });
  const addStart = Date.now();
  for (let i = 0; i < jobs; i += 1000) {
    const chunk = [];
    for (let j = i; j < Math.min(i + 1000, jobs); j++) chunk.push({ name: 'noop', data: { n: j } });
    await queue.addBulk(chunk);
  }
  const addEnd = Date.now();
  const spawnStart = Date.now();
  let firstActive = Infinity;
  const children = [];
  for (let w = 0; w < workers; w++) {
    const c = fork(__filename, ['worker'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    c.on('message', (m) => {
      if (m && m.firstActive) firstActive = Math.min(firstActive, m.firstActive);
    });
    children.push(c);
  }
  const { done, failed } = await waitAll(queue, jobs, Number(process.env.BQ_STALL_MS || 60000));
  for (const c of children) c.send('stop');
  await Promise.all(children.map((c) => new Promise((r) => c.on('exit', r))));
  await queue.obliterate({ force: true });
  await queue.close();
  const drainS = (done - firstActive) / 1000;
  const version = require('bullmq/package.json').version;
  console.log(JSON.stringify({
    bullmq: version, jobs, failed, workers, concurrency: Number(process.env.BQ_CONCURRENCY),
    add_seconds: (addEnd - addStart) / 1000, add_per_s: jobs / ((addEnd - addStart) / 1000),
    drain_seconds: drainS, jobs_per_s: jobs / drainS,
    spawn_to_done_seconds: (done - spawnStart) / 1000,
  }));
}

(process.argv[2] === 'worker' ? child() : parent()).catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
