import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

// Asking the kernel for port 0 and releasing it is racy, but on loopback in a
// test run the window is small; callers that bind a daemon retry on a clash.

// A TCP port on 127.0.0.1 that nothing listens on right now.
export async function freeTcpPort(): Promise<number> {
  return bindTcp(0);
}

// A UDP port on 127.0.0.1 that is also free on TCP, as DNS servers bind both.
export async function freeUdpPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await bindUdp(0);
    const alsoTcp = await bindTcp(port).then(
      () => true,
      () => false,
    );
    if (alsoTcp) return port;
  }

  throw new Error('no port free on both UDP and TCP after 20 tries');
}

// Whether a daemon's stderr says its port was taken; nginx and dnsmasq word it alike.
export function isPortClash(stderr: string): boolean {
  return stderr.includes('Address already in use');
}

function bindTcp(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      const bound = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(bound));
    });
  });
}

function bindUdp(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.once('error', reject);
    socket.bind(port, '127.0.0.1', () => {
      const bound = socket.address().port;
      socket.close(() => resolve(bound));
    });
  });
}
