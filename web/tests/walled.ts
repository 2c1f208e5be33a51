// A walled network for browser tests: a network namespace joined to this one by a veth pair
// (198.18.N.1 here, 198.18.N.2 inside, the benchmarking range), whose nftables ruleset drops
// all UDP and rejects TCP to any port but `openPorts`, as institutional firewalls do. Chromium
// runs inside it through a wrapper script (`exec ip netns exec NS chromium "$@"`). Needs root.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';

export interface WalledNetwork {
  name: string;
  /** This namespace's end of the veth pair: where the server listens. */
  serverIp: string;
  /** The namespace's own address. */
  clientIp: string;
  /** A `chromium` that runs inside the namespace. */
  chromium: string;
  /** Packets the ruleset dropped for being UDP. */
  udpDropped(): number;
  close(): void;
}

function ip(...args: string[]): void {
  try {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`ip ${args.join(' ')} failed (the firewall tests need root and iproute2): ${(e as Error).message}`);
  }
}

/**
 * Inside the namespace, `serverNames` resolve to the server's address (`ip netns exec`
 * bind-mounts /etc/netns/NAME/hosts over /etc/hosts), as an institution's DNS would name it.
 */
export function walledNetwork(slot: number, openPorts: number[], chromiumPath: string, serverNames: string[] = []): WalledNetwork {
  const n = (process.pid % 50) * 2 + 120 + slot;
  const name = `cclweb${n}`;
  const outside = `cwb${n}o`;
  const inside = `cwb${n}i`;
  const serverIp = `198.18.${n}.1`;
  // Left over from a run that was killed.
  try { execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' }); } catch { /* none */ }
  try { execFileSync('ip', ['link', 'del', outside], { stdio: 'ignore' }); } catch { /* none */ }
  ip('netns', 'add', name);
  const etc = `/etc/netns/${name}`;
  rmSync(etc, { recursive: true, force: true });
  if (serverNames.length > 0) {
    mkdirSync(etc, { recursive: true });
    writeFileSync(joinPath(etc, 'hosts'), `127.0.0.1 localhost\n${serverIp} ${serverNames.join(' ')}\n`);
  }
  ip('link', 'add', outside, 'type', 'veth', 'peer', 'name', inside);
  ip('link', 'set', inside, 'netns', name);
  ip('addr', 'add', `${serverIp}/30`, 'dev', outside);
  ip('link', 'set', outside, 'up');
  const exec = (...args: string[]) => ip('netns', 'exec', name, ...args);
  exec('ip', 'addr', 'add', `198.18.${n}.2/30`, 'dev', inside);
  exec('ip', 'link', 'set', inside, 'up');
  exec('ip', 'link', 'set', 'lo', 'up');
  exec('ip', 'route', 'add', 'default', 'via', serverIp);
  const dir = mkdtempSync(joinPath(tmpdir(), `${name}-`));
  const rules = joinPath(dir, 'walled.nft');
  writeFileSync(
    rules,
    `table inet conclave_walled {
    chain output {
        type filter hook output priority 0; policy accept;
        oifname "lo" accept
        meta l4proto udp counter name udp_dropped drop
        tcp dport { ${openPorts.join(', ')} } accept
        meta l4proto tcp reject with tcp reset
    }
    counter udp_dropped {}
}
`,
  );
  exec('nft', '-f', rules);
  const chromium = joinPath(dir, 'chromium-walled');
  writeFileSync(chromium, `#!/bin/sh\nexec ip netns exec ${name} ${chromiumPath} "$@"\n`);
  chmodSync(chromium, 0o755);
  return {
    name,
    serverIp,
    clientIp: `198.18.${n}.2`,
    chromium,
    udpDropped() {
      const out = execFileSync('ip', ['netns', 'exec', name, 'nft', '-j', 'list', 'counter', 'inet', 'conclave_walled', 'udp_dropped']).toString();
      const items = (JSON.parse(out) as { nftables: Array<{ counter?: { packets: number } }> }).nftables;
      const counter = items.find((i) => i.counter)?.counter;
      if (!counter) throw new Error(`no counter in ${out}`);
      return counter.packets;
    },
    close() {
      try { execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' }); } catch { /* gone */ }
      rmSync(dir, { recursive: true, force: true });
      rmSync(etc, { recursive: true, force: true });
    },
  };
}

export interface TestCa {
  /** The CA certificate (PEM): what `SSL_CERT_FILE` names for bots. */
  caPem: string;
  /** A server certificate the CA signed for `ip` (and `dnsNames`), and its key. */
  cert: string;
  key: string;
  /** A home whose NSS database trusts the CA, as Chromium on Linux reads it. */
  browserHome: string;
  close(): void;
}

/** A throwaway CA (openssl) and a certificate for `ip` and `dnsNames`; Chromium trusts it through NSS (certutil). */
export function testCa(ip: string, dnsNames: string[] = []): TestCa {
  const dir = mkdtempSync(joinPath(tmpdir(), 'conclave-test-ca-'));
  const at = (name: string) => joinPath(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '2', '-subj', '/CN=Conclave test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', ...ec, '-keyout', at('server.key'), '-out', at('server.csr'), '-subj', `/CN=${ip}`);
  writeFileSync(at('server.ext'), `subjectAltName=${[`IP:${ip}`, ...dnsNames.map((d) => `DNS:${d}`)].join(',')}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n`);
  openssl('x509', '-req', '-in', at('server.csr'), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', at('server.ext'), '-out', at('server.pem'));
  const home = at('home');
  const nssdb = joinPath(home, '.pki/nssdb');
  mkdirSync(nssdb, { recursive: true });
  try {
    execFileSync('certutil', ['-N', '-d', `sql:${nssdb}`, '--empty-password'], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync('certutil', ['-A', '-d', `sql:${nssdb}`, '-n', 'conclave-test-ca', '-t', 'C,,', '-i', at('ca.pem')], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`certutil failed (Debian's libnss3-tools; cargo xtask setup installs it): ${(e as Error).message}`);
  }
  return { caPem: at('ca.pem'), cert: at('server.pem'), key: at('server.key'), browserHome: home, close: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface HttpProxy {
  /** `http://IP:PORT`, for Chromium's --proxy-server. */
  url: string;
  port: number;
  /** The CONNECT requests the proxy served, from its log: `host:port` each. */
  connects(): string[];
  /** The hosts it refused to reach (anything but the server). */
  filtered(): string[];
  stop(): Promise<void>;
}

/**
 * Debian's tinyproxy on this namespace's end of the veth pair, the only way out of a walled
 * network opened to `port` alone: CONNECT to the server's address only, on any port.
 */
export async function httpProxy(net: WalledNetwork, port: number): Promise<HttpProxy> {
  const dir = mkdtempSync(joinPath(tmpdir(), 'conclave-tinyproxy-'));
  const log = joinPath(dir, 'tinyproxy.log');
  const config = joinPath(dir, 'tinyproxy.conf');
  // Only to the server: whatever else the browser asks for (its update and account services)
  // is refused before the proxy resolves a name, so no test traffic leaves the machine.
  const filter = joinPath(dir, 'allowed');
  writeFileSync(filter, `${net.serverIp}\n`);
  writeFileSync(
    config,
    [
      `Port ${port}`,
      `Listen ${net.serverIp}`,
      `Allow ${net.clientIp}`,
      'Timeout 600',
      'MaxClients 100',
      'DisableViaHeader Yes',
      `Filter "${filter}"`,
      'FilterType fnmatch',
      'FilterDefaultDeny Yes',
      `LogFile "${log}"`,
      'LogLevel Connect',
      '',
    ].join('\n'),
  );
  writeFileSync(log, '');
  chmodSync(dir, 0o777);
  chmodSync(log, 0o666);
  let child: ChildProcess;
  try {
    child = spawn('tinyproxy', ['-d', '-c', config], { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (e) {
    throw new Error(`cannot start tinyproxy (Debian's tinyproxy; cargo xtask setup installs it): ${(e as Error).message}`);
  }
  const exited = new Promise((r) => child.once('exit', r));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const listening = await new Promise<boolean>((ok) => {
      const probe = connect(port, net.serverIp, () => { probe.destroy(); ok(true); });
      probe.once('error', () => ok(false));
    });
    if (listening) break;
    if (child.exitCode !== null) throw new Error(`tinyproxy exited: ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error('tinyproxy did not listen within 10 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url: `http://${net.serverIp}:${port}`,
    port,
    connects() {
      const text = readFileSync(log, 'utf8');
      return [...text.matchAll(/Request \(file descriptor \d+\): CONNECT (\S+)/g)].map((m) => m[1] ?? '');
    },
    filtered() {
      const text = readFileSync(log, 'utf8');
      return [...text.matchAll(/Proxying refused on filtered domain "([^"]+)"/g)].map((m) => m[1] ?? '');
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
