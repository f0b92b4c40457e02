set terminal pngcairo size 700,480 font "sans,10"
set output 'sequential.png'
set title "Sequential throughput and reads after clone (MB/s, higher is better)" noenhanced
set datafile separator '\t'
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside right top noenhanced
set xtics noenhanced
set yrange [0:*]
plot for [i=2:5] 'sequential.dat' using i:xtic(1) title columnheader(i)
