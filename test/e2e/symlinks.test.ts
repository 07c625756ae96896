import {
  lstat,
  mkdir,
  readFile,
  readdir,
  readlink,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { startManager } from '../helpers/manager.js';
import { nginxConfig } from '../helpers/nginx.js';
import { makeSandbox, type Sandbox } from '../helpers/sandbox.js';

const ROUTE = '/sites/lab/app.conf';

// An instance whose CONF_FILE is etc/app.conf, a link into srv/.
async function linkedSite(box: Sandbox, test: string) {
  const manager = await startManager();
  const etc = join(box.liveDir, 'etc');
  const srv = join(box.liveDir, 'srv');
  await mkdir(etc, { recursive: true });
  await mkdir(srv, { recursive: true });
  const link = join(etc, 'app.conf');
  await symlink(join(srv, 'app.conf'), link);

  await writeFile(box.envFile, `SITE_ID=lab\nMANAGER_URL=${manager.url}\n`);
  await writeFile(
    join(box.instancesDir, 'app.env'),
    `CONF_URL=/sites/\${SITE_ID}/app.conf\nCONF_FILE=${link}\nTEST_COMMAND=${test}\n`,
  );
  return { manager, etc, srv, link, run: () => runCli(['run', 'app'], box.env) };
}

describe('a CONF_FILE that is a symlink into another directory', () => {
  it('when the config includes a file relative to the link then the real nginx -t accepts it', async () => {
    const box = await makeSandbox();
    const site = await linkedSite(box, 'nginx -t -q -c {}');
    for (const dir of ['temp', 'logs'])
      await mkdir(join(box.root, 'nginx', dir), { recursive: true });
    await writeFile(join(site.etc, 'types.conf'), 'types { text/plain txt; }\n');
    const config = nginxConfig({
      port: 1,
      prefix: join(box.root, 'nginx'),
      body: 'v1',
    }).replace('http {', 'http {\n    include types.conf;');
    site.manager.serve(ROUTE, config);

    const result = await site.run();

    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(await readlink(site.link)).toBe(join(site.srv, 'app.conf'));
    expect(await readFile(join(site.srv, 'app.conf'), 'utf8')).toBe(config);
    const candidates = [...(await readdir(site.etc)), ...(await readdir(site.srv))];
    expect(candidates.filter((name) => name.includes('.pull-config-'))).toEqual([]);
  });

  it('when the link dangles then its target is created and the link stays', async () => {
    const box = await makeSandbox();
    const site = await linkedSite(box, 'test -s {}');
    site.manager.serve(ROUTE, 'setting 1;\n');

    const result = await site.run();

    expect(result.code, result.stderr).toBe(0);
    expect((await lstat(site.link)).isSymbolicLink()).toBe(true);
    expect(await readFile(join(site.srv, 'app.conf'), 'utf8')).toBe('setting 1;\n');
  });
});
