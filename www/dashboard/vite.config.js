// The dashboard: built into www/dashboard/dist and embedded in the `cloudsignal` binary
// (crates/control/build.rs), served at /dashboard/ by `cloudsignal serve`. The same files can
// be deployed as static files on the control plane's origin.
import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/dashboard/',
  build: { target: 'es2022', outDir: 'dist', emptyOutDir: true, assetsInlineLimit: 0 },
});
