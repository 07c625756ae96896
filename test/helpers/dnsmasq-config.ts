export interface DnsmasqConfigOptions {
  port: number;
  pidFile: string;
  // Name to IPv4 address, one address=/NAME/IP line each.
  records: Record<string, string>;
  logFile?: string;
}

// A dnsmasq config that answers only for `records`, only on 127.0.0.1:port, and
// never forwards anywhere. Run as root, dnsmasq drops to "nobody" by itself
// after binding, so no user= line is needed.
export function dnsmasqConfig({
  port,
  pidFile,
  records,
  logFile,
}: DnsmasqConfigOptions): string {
  const lines = [
    '# Rendered by test/helpers/dnsmasq-config.ts',
    `port=${port}`,
    'listen-address=127.0.0.1',
    'bind-interfaces',
    'no-resolv',
    'no-hosts',
    `pid-file=${pidFile}`,
    ...(logFile === undefined ? [] : [`log-facility=${logFile}`]),
    ...Object.entries(records).map(([name, ip]) => `address=/${name}/${ip}`),
  ];
  if (lines.some((line) => line.includes('\n')))
    throw new Error('newline in a dnsmasq value');

  return `${lines.join('\n')}\n`;
}

// dnsmasq rereads address= lines only when restarted (SIGHUP rereads hosts
// files, not dnsmasq.conf), which is why pull-config restarts it.
export function restartScriptText(pidFile: string, confPath: string): string {
  return `#!/bin/sh
# Stands in for "systemctl restart dnsmasq", as systemd does not run here:
# stop the dnsmasq named in the pid file, then start it again from its config.
set -u
PATH=/usr/sbin:/usr/bin:/bin
pid_file=${shellQuote(pidFile)}
conf=${shellQuote(confPath)}

# An exited daemon lingers as a zombie until PID 1 reaps it, so kill -0 cannot tell.
running() {
  [ -r "/proc/$1/stat" ] || return 1
  [ "$(sed 's/^.*) //' "/proc/$1/stat" | cut -d ' ' -f 1)" != Z ]
}

pid=$(cat "$pid_file" 2>/dev/null || true)
if [ -n "$pid" ] && running "$pid" && [ "$(cat "/proc/$pid/comm")" = dnsmasq ]; then
  kill "$pid"
  tries=0
  while running "$pid"; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then
      echo "dnsmasq $pid did not stop" >&2
      exit 1
    fi
    sleep 0.05
  done
fi

exec dnsmasq -C "$conf"
`;
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}
