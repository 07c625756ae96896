import { join } from 'node:path';

export interface NginxPaths {
  pidFile: string;
  errorLog: string;
  tempDir: string;
}

// Where a config rendered for this prefix keeps its runtime files.
export function nginxPaths(prefix: string): NginxPaths {
  return {
    pidFile: join(prefix, 'logs', 'nginx.pid'),
    errorLog: join(prefix, 'logs', 'error.log'),
    tempDir: join(prefix, 'temp'),
  };
}

export interface NginxConfigOptions {
  port: number;
  prefix: string;
  body: string;
}

// A complete nginx 1.22 config that answers `body` on every path. Every path is
// absolute and under prefix: run as root, even `nginx -t` creates the *_temp_path
// directories (their parent must exist) and chowns them to the worker user.
export function nginxConfig({ port, prefix, body }: NginxConfigOptions): string {
  const { pidFile, errorLog, tempDir } = nginxPaths(prefix);
  const temp = (name: string) => quote(join(tempDir, name));

  return `# Rendered by test/helpers/nginx-config.ts
daemon on;
master_process on;
worker_processes 1;
pid ${quote(pidFile)};
error_log ${quote(errorLog)} notice;

events {
    worker_connections 64;
}

http {
    access_log off;
    client_body_temp_path ${temp('client_body')};
    proxy_temp_path ${temp('proxy')};
    fastcgi_temp_path ${temp('fastcgi')};
    uwsgi_temp_path ${temp('uwsgi')};
    scgi_temp_path ${temp('scgi')};

    server {
        listen 127.0.0.1:${port};

        location / {
            default_type text/plain;
            return 200 ${quote(body)};
        }
    }
}
`;
}

// nginx has no escape for "$" (it always starts a variable), so refuse it.
function quote(text: string): string {
  if (text.includes('$')) throw new Error(`nginx string cannot hold "$": ${text}`);

  const escaped = text.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\n/g, '\\n');
  return `"${escaped}"`;
}
