// express@4 installed under the alias "express4": typed as express, which is enough for tests.
declare module 'express4' {
  import express from 'express';
  export default express;
}
