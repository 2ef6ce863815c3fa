async function* main(args) {
  const n = args.n === undefined ? 1 : args.n;
  for (let i = 0; i < n; i++) yield {s: 'x'.repeat(args.size || 1)};
}
