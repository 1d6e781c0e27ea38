import { readFile } from 'node:fs/promises';
import type { BrowserContext, Page } from 'playwright-core';
import { startBrowserSite, type BrowserSite } from './browserSite';
import { startPlatform, type RunningPlatform } from './services';
import { newSource, type SourceClient } from './sourceClient';

/** How browser SDKs send a write key: as the HTTP Basic user, with an empty password. */
export const basicWriteKey = (writeKey: string) => `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`;

/** A customer's site, of another origin than the API, whose pages load a browser SDK that sends to a platform with one web source. */
export interface SdkSite {
  platform: RunningPlatform;
  source: SourceClient;
  /** Where the site is (`/?<query>` is the page). */
  url: string;
  /**
   * A fresh browser profile on the page, once the SDK has put itself on `window.analytics`.
   * `watch` sees the context before the page loads (to listen to or route its requests).
   */
  visit(query: string, watch?: (context: BrowserContext) => unknown): Promise<{ context: BrowserContext; tab: Page; run: (script: string) => Promise<unknown> }>;
}

/**
 * Registers the calling describe's hooks: the platform, its source, and the site serving `page(query)`
 * at `/` and the SDK's script files from `scripts` (a name to its path). A page error fails the test
 * it happened in. The site is usable from the describe's tests on.
 */
export function useSdkSite(name: string, page: (query: URLSearchParams, site: SdkSite) => string, scripts: (file: string) => string): SdkSite {
  let browserSite: BrowserSite;
  const pageErrors: string[] = [];
  const site = {
    async visit(query, watch) {
      const context = await browserSite.browser.newContext();
      context.on('weberror', (error) => pageErrors.push(error.error().message));
      await watch?.(context);
      const tab = await context.newPage();
      await tab.goto(`${site.url}/?${query}`);
      await tab.waitForFunction('window.analytics !== undefined');
      return { context, tab, run: (script: string) => tab.evaluate(script) };
    },
  } as SdkSite;

  beforeAll(async () => {
    site.platform = await startPlatform(name);
    site.source = await newSource(site.platform.api, 'web');
    browserSite = await startBrowserSite(async (req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page(url.searchParams, site));
        return;
      }
      const script = await readFile(scripts(url.pathname.slice(1))).catch(() => null);
      if (script) res.writeHead(200, { 'content-type': 'text/javascript' }).end(script);
      else res.writeHead(404).end();
    });
    site.url = browserSite.url;
  });
  afterAll(async () => {
    await browserSite?.close();
    await site.platform?.stop();
  });
  afterEach(() => {
    expect(pageErrors.splice(0)).toEqual([]);
  });
  return site;
}
