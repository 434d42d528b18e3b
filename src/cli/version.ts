/** The version `accel --version` prints. */
import fs from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../paths.js';

/** Read from package.json at run time rather than written into the code,
 * so a release bumps one place and the CLI cannot report another version. */
export function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version?: unknown };
  if (typeof pkg.version !== 'string') throw new Error(`${PACKAGE_ROOT}/package.json has no version`);
  return pkg.version;
}
