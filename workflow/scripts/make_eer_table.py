# Thin entry point for rule make_eer_table (Tables 2 and 3 of audio datasets; logic: s3vae.reporting.tables).
from s3vae.reporting.tables import format_table, table3, write_csv
from s3vae.utils import redirect_output

redirect_output(snakemake.log[0])
table = table3(list(snakemake.input.evals), snakemake.params.rows, snakemake.params.seeds,
               snakemake.params.not_implemented)
write_csv(table, snakemake.output[0])
print(format_table(table))
