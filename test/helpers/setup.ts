import { afterAll, afterEach, beforeEach } from 'vitest';
import { cleanupFile, enterTest, leaveTest } from './cleanup.js';

// Root-level hooks run first before a test and last after it, so resources
// made in a test or its beforeEach are stopped even when the test failed.
beforeEach(() => enterTest());
afterEach(() => leaveTest());
afterAll(() => cleanupFile());
