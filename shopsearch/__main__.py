from shopsearch.cli.app import run

run()
