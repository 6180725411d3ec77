// The demo is built against the packed npm package, exactly as an app would consume it.
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  // @cloudsignal/client uses top-level await to load its WebAssembly once
  build: { target: 'es2022', outDir: 'dist', emptyOutDir: true },
  // pre-bundling would break the package's `new URL('./wasm/…', import.meta.url)`
  optimizeDeps: { exclude: ['@cloudsignal/client'] },
});
