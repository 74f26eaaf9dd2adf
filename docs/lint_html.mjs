// Check an HTML email against caniemail's data (by hand; not part of CI).
import { readFileSync } from 'node:fs';
import { doIUseEmail } from '@jsx-email/doiuse-email';
const clients = ['gmail.*', 'outlook.*', 'apple-mail.*', 'yahoo.*'];
for (const file of process.argv.slice(2)) {
  const result = doIUseEmail(readFileSync(file, 'utf8'), { emailClients: clients });
  console.log(`${file}: ${result.success ? 'no errors' : 'ERRORS'}; ${(result.errors || []).length} errors, ${result.notes.length} notes`);
  for (const line of [...new Set(result.errors || [])]) console.log('  error: ' + line);
  for (const line of [...new Set(result.notes)]) console.log('  note: ' + line);
}
