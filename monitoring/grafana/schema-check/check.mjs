// Type-checks every dashboard in ../dashboards against types.ts with `tsc --noEmit`.
// Usage (from this folder, after `npm ci`): node check.mjs
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dashboards = join(here, '..', 'dashboards');
const generated = join(here, 'generated');

rmSync(generated, { recursive: true, force: true });
mkdirSync(generated);
const files = readdirSync(dashboards).filter((f) => f.endsWith('.json')).sort();
if (files.length === 0) {
  console.error(`no dashboards in ${dashboards}`);
  process.exit(1);
}
for (const file of files) {
  const json = JSON.stringify(JSON.parse(readFileSync(join(dashboards, file), 'utf8')), null, 2);
  const name = basename(file, '.json');
  writeFileSync(
    join(generated, `${name}.ts`),
    `// generated from dashboards/${file} by check.mjs\n` +
      `import type { CheckedDashboard } from '../types';\n\n` +
      `export const dashboard: CheckedDashboard = ${json};\n`,
  );
}
try {
  execFileSync(join(here, 'node_modules', '.bin', 'tsc'), ['--noEmit', '-p', here], { stdio: 'inherit' });
} catch {
  console.error(`dashboard schema check FAILED (the errors above point into generated/<dashboard>.ts)`);
  process.exit(1);
}
console.log(`dashboard schema check: ${files.length} dashboards match @grafana/schema (${files.join(', ')})`);
