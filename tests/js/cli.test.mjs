// `cloudsignal serve --config FILE`: TOML keys are the flag names; flags and environment win.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { CLI, tempDir, writeTemp, freePort } from './support/env.mjs';


/** Runs `cloudsignal serve` until `until` appears in its log (or it exits); returns the log. */
function serve(args, env = {}, until = 'MQTT listening') {
  return new Promise((resolve) => {
    const p = spawn(CLI, ['serve', '--control-addr', 'off', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    const done = (code) => { p.kill('SIGTERM'); resolve({ log, code }); };
    p.stderr.on('data', (d) => { log += d; if (log.includes(until)) done(null); });
    p.on('exit', (code) => resolve({ log, code }));
    setTimeout(() => done('timeout'), 10_000);
  });
}

test('a TOML config file configures serve; flags override it', async () => {
  const [filePort, flagPort] = [await freePort(), await freePort()];
  const dir = tempDir();
  const config = writeTemp(dir, 'cloudsignal.toml', `mqtt_addr = "127.0.0.1:${filePort}"\nws_addr = "off"\nallow_anonymous = true\nws_allowed_origins = ["https://a.example", "https://b.example"]\n`);
  const fromFile = await serve(['--config', config]);
  assert.match(fromFile.log, new RegExp(`MQTT listening addr=127.0.0.1:${filePort}`));
  assert.match(fromFile.log, /ANONYMOUS ACCESS IS ENABLED/);
  const overridden = await serve(['--config', config, '--mqtt-addr', `127.0.0.1:${flagPort}`]);
  assert.match(overridden.log, new RegExp(`MQTT listening addr=127.0.0.1:${flagPort}`));
});

test('unknown keys in the config file are refused with the list of known keys', async () => {
  const config = writeTemp(tempDir(), 'bad.toml', 'mqtt_adress = "127.0.0.1:1"\n');
  const r = await serve(['--config', config], {}, 'never');
  assert.notEqual(r.code, 0);
  assert.match(r.log, /unknown key "mqtt_adress"; known keys: mqtt_addr, ws_addr/);
});
