"""What a newcomer runs into with `cloudsignal` on their own machine: busy ports, a second
server on one data directory, config files written from the flag names, host names in listen
addresses, token lifetimes, and error messages. Each is tried with the real binary."""

import os
import socket
import subprocess
import time

from conftest import BIN, ControlBroker, free_port


def run(*args, env=None, timeout=30):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "RUST_BACKTRACE": "1", **(env or {})})


def test_a_busy_port_is_reported_before_anything_is_created(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = tmp_path / "data"
        out = run("serve", "--mqtt-addr", f"127.0.0.1:{free_port()}", "--ws-addr", "off",
                  "--control-addr", f"127.0.0.1:{port}", "--data-dir", str(data))
    assert out.returncode == 1
    assert f"--control-addr 127.0.0.1:{port}: cannot listen there" in out.stderr, out.stderr
    assert not data.exists(), "no data directory, no admin key printed"
    assert "sk_" not in out.stdout
    # one line, no backtrace even with RUST_BACKTRACE=1
    assert out.stderr.startswith("error: ") and "backtrace" not in out.stderr.lower()


def test_two_servers_cannot_share_a_data_directory(tmp_path):
    first = ControlBroker(tmp_path)
    try:
        out = run("serve", "--mqtt-addr", f"127.0.0.1:{free_port()}", "--ws-addr", "off",
                  "--control-addr", f"127.0.0.1:{free_port()}", "--data-dir", str(first.data))
        assert out.returncode == 1
        assert "is in use by another cloudsignal serve" in out.stderr, out.stderr
        assert first.api("GET", "/v1/keys")[0] == 200, "the first server is unaffected"
    finally:
        first.kill()


def test_config_keys_are_the_flag_names_and_bad_values_name_the_file(tmp_path):
    jwks = tmp_path / "jwks.json"
    key = tmp_path / "k.jwk"
    assert run("keygen", "--out", str(key)).returncode == 0
    jwks.write_text(run("jwks", str(key)).stdout)
    cfg = tmp_path / "cloudsignal.toml"
    port = free_port()
    for text, ok, needle in [
        # the flag's name; a host name for the listener
        (f'issuer = "https://i.test"\nissuer_jwks = "{jwks}"\nmqtt_addr = "localhost:{port}"\n', True, None),
        # the old name still works, with a warning naming the new one
        (f'trusted_issuer = "https://i.test"\nissuer_jwks = "{jwks}"\nmqtt_addr = "127.0.0.1:{port}"\n', True,
         'key "trusted_issuer" is an old name; use "issuer"'),
        ('mqtt_addr = "nowhere"\n', False, f'{cfg}: key "mqtt_addr": invalid value'),
        ('receive_maximum = 0\n', False, f'{cfg}: key "receive_maximum": invalid value'),
    ]:
        cfg.write_text(text)
        p = subprocess.Popen([BIN, "serve", "--config", str(cfg), "--ws-addr", "off", "--control-addr", "off"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if ok:
            # it listens (on the host name's address), then is stopped
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert p.poll() is None, p.communicate()[1]
                    time.sleep(0.05)
            p.terminate()
            _, err = p.communicate(timeout=10)
            assert "trusting tkn_ issuer" in err, err
        else:
            _, err = p.communicate(timeout=10)
            assert p.returncode == 1, err
        if needle:
            assert needle in err, err


def test_token_lifetimes_are_bounded_in_the_cli(tmp_path):
    key = tmp_path / "k.jwk"
    assert run("keygen", "--out", str(key)).returncode == 0
    base = ["token", "issue", "--key", str(key), "--issuer", "https://i", "--user", "u", "--org", "org_k7xm4pqr2n5t"]
    for ttl in ("0", "4", "86401", "99999999"):
        out = run(*base, "--ttl", ttl)
        assert out.returncode == 2 and "--ttl" in out.stderr and "5..=86400" in out.stderr, out.stderr
    assert run(*base, "--ttl", "86400").stdout.startswith("tkn_")


def test_errors_say_each_cause_once(tmp_path):
    out = run("jwks", str(tmp_path / "missing.jwk"))
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: reading ") and line.count("No such file") == 1, line
